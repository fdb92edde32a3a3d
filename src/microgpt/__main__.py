import sys

from microgpt.cli import main

sys.exit(main())
