"""`python -m ftstudy`: the command line (ftstudy.cli)."""
import sys

from ftstudy.cli import main

sys.exit(main())
