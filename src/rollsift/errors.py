"""The errors a user can act on. ``rollsift``'s command line prints their message, without a
traceback (``rollsift --debug ...`` shows it), and exits with ``exit_code``; anything else is a bug
and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """A bad input, setting or state, with a message that names it and the way out."""

    exit_code = 2
