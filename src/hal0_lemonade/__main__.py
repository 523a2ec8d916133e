"""`python -m hal0_lemonade` runs the same CLI as the console script."""

import sys

from hal0_lemonade.cli import main

sys.exit(main())
