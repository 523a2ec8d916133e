"""Every host path the installer knows, derived from one root.

``Layout(root)`` maps the absolute paths the daemon and systemd see (``/opt/lemonade``) to
the paths this process writes (``root / "opt/lemonade"``).  Tests and sandbox installs pass a
temp dir as root and exercise exactly the code paths of a real install.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import NamedTuple

SERVICE_NAME = "hal0-lemonade.service"
SERVICE_USER = "hal0"
SERVICE_GROUP = "hal0"


class HostPath(NamedTuple):
    """A path as the target host sees it, plus where this process finds it."""

    host: PurePosixPath
    real: Path

    def __str__(self) -> str:
        return str(self.host)


class Layout(NamedTuple):
    root: Path

    @property
    def is_host_root(self) -> bool:
        """True when acting on the running host, where systemd (if any) is PID 1."""
        return self.root.resolve() == Path("/")

    def at(self, host_path: str) -> HostPath:
        pure = PurePosixPath(host_path)
        if not pure.is_absolute():
            raise ValueError(f"host paths are absolute: {host_path}")
        return HostPath(pure, self.root / pure.relative_to("/"))

    # The release: /opt/lemonade is a symlink to one of the immutable release dirs, so that
    # switching versions (and rolling back) is one atomic rename of a symlink.
    @property
    def live(self) -> HostPath:
        return self.at("/opt/lemonade")

    @property
    def releases(self) -> HostPath:
        return self.at("/opt/lemonade.releases")

    @property
    def previous(self) -> HostPath:
        """Symlink to the release that was live before the current one (for rollback)."""
        return self.at("/opt/lemonade.releases/previous")

    @property
    def no_start(self) -> HostPath:
        """Root's record that the install ran with --no-start: status then shows the service
        as not started on purpose instead of failing on it."""
        return self.at("/opt/lemonade.releases/no-start")

    @property
    def daemon(self) -> HostPath:
        return self.at("/opt/lemonade/lemond")

    @property
    def marker(self) -> HostPath:
        return self.at("/opt/lemonade/.installed-version")

    # The daemon's state, owned by the service user.
    @property
    def home(self) -> HostPath:
        return self.at("/var/lib/hal0")

    @property
    def state_dir(self) -> HostPath:
        return self.at("/var/lib/hal0/lemonade")

    @property
    def config(self) -> HostPath:
        return self.at("/var/lib/hal0/lemonade/config.json")

    @property
    def models_dir(self) -> HostPath:
        return self.at("/var/lib/hal0/models")

    @property
    def hf_cache(self) -> HostPath:
        return self.at("/var/lib/hal0/huggingface")

    # systemd.
    @property
    def unit(self) -> HostPath:
        return self.at(f"/etc/systemd/system/{SERVICE_NAME}")

    @property
    def dropin_dir(self) -> HostPath:
        return self.at(f"/etc/systemd/system/{SERVICE_NAME}.d")

    @property
    def wants_link(self) -> HostPath:
        return self.at(f"/etc/systemd/system/multi-user.target.wants/{SERVICE_NAME}")

    # The accounts database.
    @property
    def passwd(self) -> HostPath:
        return self.at("/etc/passwd")

    @property
    def group(self) -> HostPath:
        return self.at("/etc/group")

    # Installer bookkeeping.
    @property
    def download_cache(self) -> HostPath:
        return self.at("/var/cache/hal0-lemonade")

    @property
    def lock(self) -> HostPath:
        # In /run, where only root can create names: /run/lock is world-writable (1777), so
        # any local user could pre-create the lock there and hold it, or plant a symlink.
        return self.at("/run/hal0-lemonade.lock")
