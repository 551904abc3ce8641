"""``python -m privsepd``: the ``privsepd`` command, for when no console script is on PATH."""

import sys

from privsepd.cli.main import main

sys.exit(main())
