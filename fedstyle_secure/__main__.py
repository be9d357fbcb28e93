"""``python -m fedstyle_secure``: the ``fedstyle`` command line (as ``python -m fedstyle_secure.cli``)."""

import sys

from fedstyle_secure.cli.main import main

sys.exit(main())
