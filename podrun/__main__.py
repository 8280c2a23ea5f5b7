"""``python -m podrun``: the same entry point as the ``podrun`` console script."""

import sys

from podrun.stage0.cli import main

sys.exit(main())
