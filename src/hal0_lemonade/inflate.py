"""Which inflate the archive pipeline uses: zlib-ng where it is importable, else the stdlib's.

zlib-ng inflates about 2.5x faster with the stdlib's API and the same checks; it is a
dependency only where PyPI has a wheel for it (CPython 3.11-3.13 on x86_64 and aarch64), and
elsewhere the stdlib's zlib does the same job.  ``hal0-lemonade --version`` says which runs.
"""

from __future__ import annotations

import zlib
from typing import cast

try:  # a faster inflate with the stdlib's API and checks; optional
    from zlib_ng import zlib_ng as _fast

    impl = _fast
    NAME = "zlib-ng"
except ImportError:  # pragma: no cover - exercised where zlib-ng is not installed
    impl = zlib  # type: ignore[misc]
    NAME = "zlib"

# zlib_ng's stub types its error class as an instance
ERRORS: tuple[type[Exception], ...] = (zlib.error, cast(type[Exception], impl.error))


def describe() -> str:
    """``zlib-ng 2.2.4`` or ``zlib 1.2.13 (the stdlib's)``: what inflates, and its version."""
    if NAME == "zlib-ng":
        return f"zlib-ng {getattr(impl, 'ZLIBNG_VERSION', '?')}"
    return f"zlib {zlib.ZLIB_RUNTIME_VERSION} (the stdlib's)"
