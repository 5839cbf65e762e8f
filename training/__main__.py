"""``python -m training``: the same as the ``s2s-train`` console script."""

import sys

from training.cli import main

sys.exit(main())
