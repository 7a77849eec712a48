import sys

from posterbot.cli import main

sys.exit(main())
