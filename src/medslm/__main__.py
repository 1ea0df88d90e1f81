import sys

from medslm.cli import main

sys.exit(main())
