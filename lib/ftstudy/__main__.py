import sys

from ftstudy.cli import main

sys.exit(main())
