"""`python -m hal0_lemonade` runs the same CLI as the console script."""

from hal0_lemonade.entry import run

run()
