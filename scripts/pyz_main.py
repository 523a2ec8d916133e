"""hal0-lemonade as one file: the ``__main__`` of ``dist/hal0-lemonade.pyz`` (scripts/pyz).

The zip holds the package, its pure-Python dependency (click), and zlib-ng's compiled module
for each Python and machine PyPI has a wheel for.  Python cannot import a compiled module from
a zip, and imports ``.py`` from a zip by compiling it on every run (~90 ms), so the first
command that changes the host (install, rollback, uninstall; not a dry run), as root,
unpacks what the running interpreter needs into a root-owned cache,
``/var/cache/hal0-lemonade-pyz/<build>-<python>-<machine>``, compiles it, and imports from
there.  The cache is used only when every directory on the way is root's and writable by root
alone: another user must not be able to put code there.  Otherwise (not root, a cache that is
not sound, a full disk) it runs straight from the zip, with the stdlib's zlib.

Standard library only, and small: it runs before anything else.
"""

import contextlib
import os
import platform
import stat
import sys
import zipfile
from pathlib import Path

BUILD = "@BUILD@"  # the digest of the zip's payload, written by scripts/pyz
CACHE = Path("/var/cache/hal0-lemonade-pyz")
PACKAGES = ("hal0_lemonade/", "click/")
PYTHON = f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"


def _sound(path: Path) -> bool:
    """Every directory from / to ``path`` is root's and not writable by group or others."""
    for here in (path, *path.parents):
        try:
            st = here.lstat()
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            return False
    return True


def _flush(path: Path) -> None:
    """syncfs(2) of the filesystem holding ``path``: not os.sync(), which waits for every
    disk of a busy host."""
    import ctypes

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _unpack(pyz: Path, target: Path) -> bool:
    """Extract the packages (and this interpreter's native module) into ``target``, compiled,
    and make it appear in one rename.  False when it could not (the zip is used then)."""
    with contextlib.suppress(FileExistsError):
        CACHE.mkdir(mode=0o755)  # its own: uninstall removes /var/cache/hal0-lemonade
    if not _sound(target.parent):
        return False
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    native = f"native/{PYTHON}/"
    with zipfile.ZipFile(pyz) as archive:
        for name in archive.namelist():
            if name.startswith(PACKAGES):
                dest = name
            elif name.startswith(native):
                dest = name[len(native) :]
            else:
                continue
            path = staging / dest
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.write_bytes(archive.read(name))
            path.chmod(0o755 if name.endswith(".so") else 0o644)
    import compileall

    compileall.compile_dir(staging, quiet=2, workers=1)
    (staging / ".complete").write_text(BUILD + "\n")
    _flush(staging)  # complete and durable before it is visible
    try:
        staging.rename(target)
    except OSError:  # another run got there first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return (target / ".complete").is_file()


def _changes(argv: list[str]) -> bool:
    """Does this command change the host?  Only such a run may write the cache: a dry run,
    ``status`` or ``--help`` promise to change nothing, the cache included."""
    changing = argv[:1] in (["install"], ["rollback"], ["uninstall"])
    return changing and not {"--dry-run", "--dev", "--help", "-h"} & set(argv)


def _path(pyz: Path) -> str:
    """Where to import the package from: the unpacked cache, else the zip itself."""
    target = CACHE / f"{BUILD}-{PYTHON}"
    if (target / ".complete").is_file() and _sound(target):
        return str(target)
    if os.geteuid() == 0 and _changes(sys.argv[1:]):
        try:
            if _unpack(pyz, target) and _sound(target):
                return str(target)
        except OSError:
            pass  # a read-only /var, a full disk: run from the zip
    return str(pyz)


def main() -> None:
    sys.path[0] = _path(Path(sys.argv[0]).resolve())
    from hal0_lemonade.entry import run

    run()


main()
