"""``python -m skdvl``: the same as the ``skdvl`` command."""

import sys

try:
    from skdvl.cli import main
except KeyboardInterrupt:  # Ctrl-C while importing: nothing has been done yet
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
