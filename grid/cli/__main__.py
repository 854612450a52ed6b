"""``python -m grid.cli``: the ``biasgrid`` command."""

import sys

from grid.cli import main

sys.exit(main())
