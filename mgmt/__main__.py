import sys

from mgmt.cli import main

sys.exit(main())
