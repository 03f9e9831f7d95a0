"""``python -m skdvl``: the same as the ``skdvl`` command."""

import sys

from skdvl.cli import main

if __name__ == "__main__":
    sys.exit(main())
