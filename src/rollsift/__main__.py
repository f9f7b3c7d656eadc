"""``python -m rollsift``: the same command line as ``rollsift``."""

import sys

from .cli import main

sys.exit(main())
