"""``python -m realtime.cli`` is the ``splatcast`` command."""

import sys

from realtime.cli.main import main

sys.exit(main())
