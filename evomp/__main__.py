"""``python -m evomp`` is the ``evomp`` command."""

import sys

from evomp.cli import main

sys.exit(main())
