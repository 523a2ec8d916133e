"""The accounts database: make what a shadow-utils command wrote durable.

shadow-utils (``lib/commonio.c``) writes each changed file as ``X+``, syncs it and renames it
over ``X``, between locks (``X.lock``) it removes at the end; it never syncs ``/etc``.  A power
cut after ``useradd`` returned can therefore undo its last renames and every unlock (seen:
``gshadow`` without the new group, the line only in ``gshadow+``, four ``*.lock``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hal0_lemonade import fsops

DBS = ("passwd", "shadow", "group", "gshadow")


def sync(etc: Path) -> None:
    """Make what a shadow-utils command wrote durable.  It syncs each new file before renaming
    it into place, but not /etc: the renames and the lock removals are only in the directory.
    """
    for db in DBS:
        with contextlib.suppress(FileNotFoundError):
            fsops.fsync_file(etc / db)
    fsops.fsync_dir(etc)
