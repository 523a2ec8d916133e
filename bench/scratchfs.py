"""A fresh, journaled ext4 on a loop device for the measured installs: what a host's /opt is.

Why not just a directory on the machine's disk: the VMs this bench was written on run their
root ext4 *without* a journal (``/proc/fs/jbd2`` has no entry for it), and in that mode ext4
will not reuse an inode freed in the last 60 s, or 300 s while its inode-table block is dirty
(``recently_deleted`` in fs/ext4/ialloc.c).  After the deletion of a 300-file tree -- every
rep's, every test run's -- each file create scans past the freed inodes: perf showed
``find_inode_bit`` -> ``recently_deleted`` taking ~0.2-1 ms per create instead of ~0.03 ms,
0.1-0.3 s per side per rep, coming and going with whatever was deleted in the last minutes.
Journaled ext4 (what distributions install) never does this.

The image is sparse, formatted with inode tables and journal initialised up front (no
``ext4lazyinit`` writing behind the measurements) and attached with direct I/O, so pages are
not cached twice and ``fsync``/``syncfs`` on it reach the machine's disk; fsynced writes to it
ran at 330-500 MB/s where the bare disk gave 370-620 MB/s.  Needs root, ``losetup``,
``mkfs.ext4``, ``mount`` and ``umount``; :func:`scratch_fs` yields None where it cannot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

TOOLS = ("losetup", "mkfs.ext4", "mount", "umount")


def unavailable() -> str:
    """Why a loop-mounted ext4 cannot be made here; empty when it can."""
    if os.geteuid() != 0:
        return "not root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    return f"missing {', '.join(missing)}" if missing else ""


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


@contextlib.contextmanager
def scratch_fs(where: Path, size_gib: int, log: Callable[[str], None]) -> Iterator[Path | None]:
    """A new ext4 mounted at ``where/mnt`` (image ``where/scratch.img``) for the block.

    Yields the mount point, or None (after logging why) when one cannot be made here.
    """
    image, mnt = where / "scratch.img", where / "mnt"
    device = ""
    mounted = False
    why = unavailable()
    try:
        if not why:
            image.unlink(missing_ok=True)
            with image.open("wb") as fh:
                fh.truncate(size_gib << 30)
            init = "lazy_itable_init=0,lazy_journal_init=0"
            _run("mkfs.ext4", "-q", "-F", "-E", init, "-L", "hal0-bench", str(image))
            device = _run("losetup", "--direct-io=on", "--find", "--show", str(image))
            mnt.mkdir(exist_ok=True)
            _run("mount", device, str(mnt))
            mounted = True
    except (OSError, RuntimeError) as exc:
        why = str(exc)
    if why:
        log(f"no scratch ext4 ({why}): measuring in the work dir as it is")
        _release(mounted=mounted, mnt=mnt, device=device, image=image)
        yield None
        return
    try:
        yield mnt
    finally:
        _release(mounted=mounted, mnt=mnt, device=device, image=image)


def _release(*, mounted: bool, mnt: Path, device: str, image: Path) -> None:
    with contextlib.suppress(RuntimeError):
        if mounted:
            _run("umount", str(mnt))
        if device:
            _run("losetup", "--detach", device)
    image.unlink(missing_ok=True)
