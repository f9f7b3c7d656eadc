"""``python -m rollsift``: the same command line as ``rollsift``."""

import sys

from .cli import main

if __name__ == "__main__":  # not when a spawned child re-imports the main module (async rollouts)
    sys.exit(main())
