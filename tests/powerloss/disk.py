"""A loop-mounted ext4 whose power can be cut: what survives is exactly what was durable.

``Disk.cut()`` is xfstests' ``godown``: the ext4 shutdown ioctl with ``NOLOGFLUSH`` aborts the
journal and drops every dirty page, then the filesystem is unmounted, the loop device detached
and attached again (no block cache survives), and mounted: the journal replays what was
committed, as after a reboot.  Mounted with ``commit=600`` (no journal commit by the 5 s timer
while a case runs) and ``noauto_da_alloc`` (ext4 does not flush a file replaced by rename on its
own), so only the installer's own syncs make anything durable.  ``drop_caches`` would prove
nothing: it never drops dirty data.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2
MOUNT_OPTIONS = "commit=600,noauto_da_alloc"
IMAGE_BYTES = 64 << 20
# 4 KiB blocks and 256-byte inodes (nanosecond timestamps), as mkfs gives a root filesystem;
# mkfs's "small" defaults for a 64 MB image would be 1 KiB blocks and 128-byte inodes.
MKFS = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-I", "256"]
TOOLS = ("losetup", "mkfs.ext4", "mount", "umount", "cp")


class CutUnsupportedError(Exception):
    """This host cannot run the power-loss suite; the message says why (a skip reason)."""


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CutUnsupportedError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class CutLog:
    """Every power cut of the session, by label: the number the suite prints at the end."""

    cuts: list[str] = field(default_factory=list)


LOG = CutLog()


class Disk:
    """An ext4 image attached to a loop device and mounted at ``mountpoint``."""

    def __init__(self, image: Path, mountpoint: Path) -> None:
        self.image = image
        self.mountpoint = mountpoint
        self.device = ""

    @property
    def root(self) -> Path:
        """The install root: a directory in the filesystem (its own root holds lost+found)."""
        return self.mountpoint / "root"

    def mount(self) -> None:
        self.mountpoint.mkdir(exist_ok=True)
        self.device = _run("losetup", "--find", "--show", str(self.image))
        try:
            _run("mount", "-t", "ext4", "-o", MOUNT_OPTIONS, self.device, str(self.mountpoint))
        except CutUnsupportedError:
            self._detach()
            raise

    def cut(self, label: str = "") -> None:
        """Power off and on: everything not durable is gone, the journal is replayed."""
        fd = os.open(self.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        except OSError as exc:
            raise CutUnsupportedError(f"EXT4_IOC_SHUTDOWN: {exc}") from exc
        finally:
            os.close(fd)
        self.unmount()
        self.mount()
        LOG.cuts.append(label)

    def unmount(self) -> None:
        if self.device:
            _run("umount", str(self.mountpoint))
            self._detach()

    def _detach(self) -> None:
        _run("losetup", "--detach", self.device)
        self.device = ""


def make_image(image: Path, content: Path | None, work: Path) -> Path:
    """A fresh ext4 image whose ``/root`` is a copy of ``content`` (empty if None), unmounted
    cleanly, so every byte of it is durable."""
    with image.open("wb") as out:
        out.truncate(IMAGE_BYTES)
    _run(*MKFS, str(image))
    disk = Disk(image, work / f"{image.name}.mnt")
    disk.mount()
    try:
        disk.root.mkdir()
        if content is not None:
            # cp -a keeps owners (hal0's files), modes and symlinks exactly.
            _run("cp", "-a", f"{content}/.", str(disk.root))
    finally:
        disk.unmount()
    return image


@contextlib.contextmanager
def disk_from(template: Path, work: Path) -> Iterator[Disk]:
    """A mounted copy of ``template`` (sparse: a few ms), unmounted and removed afterwards."""
    image = work / "disk.img"
    _run("cp", "--sparse=always", str(template), str(image))
    disk = Disk(image, work / "mnt")
    disk.mount()
    try:
        yield disk
    finally:
        with contextlib.suppress(CutUnsupportedError):
            disk.unmount()
        image.unlink(missing_ok=True)


def check_support(work: Path) -> None:
    """Raise :class:`CutUnsupportedError` unless a cut here really drops what was not synced
    and keeps what was: the suite would otherwise pass for the wrong reason."""
    if os.geteuid() != 0:
        raise CutUnsupportedError("needs root (loop devices, mount, the shutdown ioctl)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise CutUnsupportedError(f"{', '.join(missing)} not found")
    if not any(Path("/dev").glob("loop*")):
        raise CutUnsupportedError("no loop device (/dev/loop*)")
    image = make_image(work / "probe.img", None, work)
    disk = Disk(image, work / "probe.mnt")
    disk.mount()
    try:
        synced = disk.root / "synced"
        synced.write_bytes(b"kept")
        fd = os.open(synced, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        fd = os.open(disk.root, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
        (disk.root / "unsynced").write_bytes(b"lost")
        disk.cut()
        LOG.cuts.pop()  # the probe's cut is not one of the suite's
        if (disk.root / "unsynced").exists():
            raise CutUnsupportedError("a cut kept data that was never synced: not a power loss")
        if (disk.root / "synced").read_bytes() != b"kept":
            raise CutUnsupportedError("a cut lost data that was synced: not a power loss")
    finally:
        with contextlib.suppress(CutUnsupportedError):
            disk.unmount()
        image.unlink()
