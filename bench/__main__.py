"""``python -m bench``: run the install benchmarks and rewrite BENCHMARKS.md."""

from __future__ import annotations

import sys

from bench.run import main

sys.exit(main())
