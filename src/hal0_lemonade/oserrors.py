"""Turn low-level OS errors into one clear line with a recovery hint."""

from __future__ import annotations

import errno

from hal0_lemonade.errors import Hal0Error

_HINTS = {
    errno.ENOSPC: "free disk space on that filesystem (the release needs ~250 MB while "
    "staging) and re-run; the previous state is still live",
    errno.EDQUOT: "the disk quota is exhausted; free space and re-run",
    errno.EROFS: "the target filesystem is read-only; remount it read-write or pick another --root",
    errno.EACCES: "permission denied: run as root (sudo), or check ownership of the path",
    errno.EPERM: "operation not permitted: run as root (sudo); in a container, the host may "
    "forbid it",
}


def explain(exc: OSError, *, step: str = "", hint: str = "") -> Hal0Error:
    where = f" ({exc.filename})" if exc.filename else ""
    reason = exc.strerror or str(exc)
    return Hal0Error(
        f"{reason}{where}",
        hint=_HINTS.get(exc.errno or 0, hint),
        step=step,
    )
