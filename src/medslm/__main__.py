import sys

from medslm.cli import main

if __name__ == "__main__":  # vLLM's engine and other spawned children re-import this module
    sys.exit(main())
