"""Benchmarks for hal0-lemonade's install path (not part of the test suite).

Run from the repository root: ``.venv/bin/python -m bench`` (or ``bash bench/run``).
Results go to BENCHMARKS.md; see bench/README.md for what is measured and how.
"""
