"""The package's own data files (the release pins, the unit template)."""

from __future__ import annotations

import pkgutil


def read_text(relpath: str) -> str:
    """``relpath`` under the package, from a wheel install or a zip alike.

    pkgutil rather than importlib.resources: the same loader underneath, for about a fifth of
    the import cost (importlib.resources pulls in zipfile, tempfile and random), which every
    install pays before its first byte.
    """
    data = pkgutil.get_data("hal0_lemonade", relpath)
    if data is None:  # pragma: no cover - only a loader without get_data returns None
        raise FileNotFoundError(f"hal0_lemonade/{relpath}")
    return data.decode("utf-8")
