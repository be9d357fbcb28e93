import sys

from fedstyle_secure.cli.main import main

sys.exit(main())
