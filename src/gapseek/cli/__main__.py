"""``python -m gapseek.cli``."""

import sys

from gapseek.cli import main

sys.exit(main())
