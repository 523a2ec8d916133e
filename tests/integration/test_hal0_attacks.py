"""The daemon's account attacks root through the installer, and loses.

lemond runs as ``hal0`` and runs code from the internet, so everything hal0 can write under
/var/lib/hal0 is hostile.  Each test installs into a sandbox root (the installer creates that
root's hal0), then performs one attack for real as a process running under the sandbox's hal0
uid (symlinks, FIFOs, sparse files, planted directories), then runs the installer (or status,
doctor) as root the way an operator would: a separate process, so a hang is a timeout here.
After each: the attack changed nothing outside hal0's tree, root's command ended with a clear
line (no traceback), and install restored a sound state.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.integration.conftest import Served, install_args
from tests.support.attacker import (
    Account,
    act_as,
    run_cli,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another uid needs root")

STATE = "var/lib/hal0/lemonade"
CONFIG = f"{STATE}/config.json"
SECRET = "TOP-SECRET-root-only"  # noqa: S105 - a marker string, not a credential


def _secret(root: Path, content: str) -> Path:
    """A root-only file in the sandbox's /etc: what the attacker wants to read or own."""
    path = root / "etc/secret"
    path.write_text(content)
    path.chmod(0o600)
    return path


def _reinstall(root: Path, s: Served, *extra: str) -> dict[str, object]:
    done = run_cli(*install_args(root, s, *extra))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def _sound_config(root: Path, account: Account) -> dict[str, object]:
    st = (root / CONFIG).lstat()
    assert stat.S_ISREG(st.st_mode) and st.st_uid == account.uid
    assert stat.S_IMODE(st.st_mode) == 0o644
    config: dict[str, object] = json.loads((root / CONFIG).read_text())
    assert config["host"] == "127.0.0.1"
    return config


def _moved_aside(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}.unsafe-*"))


def _status(root: Path) -> str:
    """``status --json`` as it reads now (asserted on later: the attack's effect comes first)."""
    return run_cli("status", "--root", root, "--json", timeout=30).stdout


def _state_failed(status_json: str) -> str:
    """The detail of the ``state`` check, which must have failed."""
    checks = {c["name"]: c for c in json.loads(status_json)["checks"]}
    state = checks["state"]
    assert state["ok"] is False, state
    return str(state["detail"])


# --- row 1: config.json -> a root-only file ---------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [f'{{"host": "0.0.0.0", "stolen": "{SECRET}"}}\n', f"root:$6${SECRET}:19000::::::\n"],
    ids=["json-target", "shadow-like-target"],
)
def test_config_symlinked_to_a_root_only_file_is_never_read(
    hal0_sandbox: tuple[Path, Served, Account], content: str
) -> None:
    root, s, hal0 = hal0_sandbox
    secret = _secret(root, content)
    before = (secret.stat(), secret.read_bytes())
    act_as(hal0, f"""
        import os
        os.unlink({str(root / CONFIG)!r})
        os.symlink({str(secret)!r}, {str(root / CONFIG)!r})
    """)  # fmt: skip

    seen = _status(root)

    report = _reinstall(root, s)
    assert report["changed"] is True
    config = _sound_config(root, hal0)
    assert "stolen" not in config
    for path in (root / STATE).iterdir():
        if path.is_file() and not path.is_symlink():
            assert SECRET not in path.read_text(errors="replace"), path
    assert (secret.stat(), secret.read_bytes()) == before  # not chowned, chmodded or changed
    aside = _moved_aside(root / STATE, "config.json")
    assert len(aside) == 1 and aside[0].readlink() == secret  # kept as evidence, not followed
    assert run_cli("status", "--root", root).returncode == 0
    detail = _state_failed(seen)
    assert f"/{CONFIG} is a symlink, not a regular file" in detail and "compromised" in detail


# --- row 2: a state dir -> /etc ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["models", "huggingface", "lemonade"])
def test_state_dir_symlinked_to_etc_is_not_chowned(
    hal0_sandbox: tuple[Path, Served, Account], name: str
) -> None:
    root, s, hal0 = hal0_sandbox
    etc = root / "etc"
    before = {p.name: (p.stat().st_uid, p.stat().st_mode) for p in [etc, *etc.iterdir()]}
    home = root / "var/lib/hal0"
    act_as(hal0, f"""
        import os
        os.rename({str(home / name)!r}, {str(home / (name + ".old"))!r})
        os.symlink({str(etc)!r}, {str(home / name)!r})
    """)  # fmt: skip
    seen = _status(root)

    # A new thread count makes the config step write too (through the moved lemonade dir).
    report = _reinstall(root, s, "--threads", "3")
    assert report["ok"] is True
    after = {p.name: (p.stat().st_uid, p.stat().st_mode) for p in [etc, *etc.iterdir()]}
    assert after == before  # /etc was neither chowned to hal0 nor chmodded 0750
    st = (home / name).lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == hal0.uid
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert [p.readlink() for p in _moved_aside(home, name)] == [etc]
    assert not (etc / "config.json").exists()
    _sound_config(root, hal0)
    assert run_cli("status", "--root", root).returncode == 0
    assert f"/var/lib/hal0/{name} is a symlink, not a directory" in _state_failed(seen)


# --- row 4: config.json as an object that hangs, bloats or crashes a reader ------------------

_PLANTS = {
    "fifo": "os.mkfifo(CONFIG)",
    "symlink-to-dev-zero": "os.symlink('/dev/zero', CONFIG)",
    "sparse-400MB": "f = open(CONFIG, 'wb'); f.truncate(400 << 20); f.close()",
    "directory": "os.mkdir(CONFIG)",
    "deep-json": "open(CONFIG, 'w').write('[' * 200_000)",
}


@pytest.mark.parametrize("plant", list(_PLANTS), ids=list(_PLANTS))
def test_config_that_would_hang_or_bloat_a_reader(
    hal0_sandbox: tuple[Path, Served, Account], plant: str
) -> None:
    root, s, hal0 = hal0_sandbox
    act_as(hal0, f"""
        import os
        CONFIG = {str(root / CONFIG)!r}
        os.unlink(CONFIG)
        {_PLANTS[plant]}
    """)  # fmt: skip
    seen = _status(root)
    done = run_cli("doctor", "--root", root, timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr

    _reinstall(root, s)
    _sound_config(root, hal0)
    backup = root / f"{CONFIG}.bak"
    if backup.exists():  # never a dense copy of a sparse file, never more than the cap
        assert backup.lstat().st_size <= 1 << 20
    assert run_cli("status", "--root", root).returncode == 0
    if plant != "deep-json":  # a regular file of invalid JSON is lemond's to rename, not unsafe
        assert "compromised" in _state_failed(seen)
    else:
        assert "not valid JSON (nested too deeply)" in seen


# --- row 5: planted directories where root writes ------------------------------------------


@pytest.mark.parametrize("name", ["config.json.bak", ".config.json.tmp-0123abcd"])
def test_a_directory_planted_at_a_name_root_writes_does_not_block_installs(
    hal0_sandbox: tuple[Path, Served, Account], name: str
) -> None:
    root, s, hal0 = hal0_sandbox
    act_as(hal0, f"import os; os.mkdir({str(root / STATE / name)!r})")
    for threads in ("3", "4"):  # two installs that each rewrite config.json (and its backup)
        report = _reinstall(root, s, "--threads", threads)
        assert report["ok"] is True
        _sound_config(root, hal0)
        config = json.loads((root / CONFIG).read_text())
        assert config["llamacpp"]["args"] == f"--parallel 1 --threads {threads}"
    backup = root / f"{CONFIG}.bak"
    assert stat.S_ISREG(backup.lstat().st_mode)
    assert json.loads(backup.read_text())["llamacpp"]["args"] == "--parallel 1 --threads 3"


def test_purge_does_not_follow_links_hal0_planted(
    hal0_sandbox: tuple[Path, Served, Account],
) -> None:
    root, _, hal0 = hal0_sandbox
    secret = _secret(root, SECRET)
    etc = root / "etc"
    before = sorted(p.name for p in etc.iterdir())
    act_as(hal0, f"""
        import os
        os.symlink({str(etc)!r}, {str(root / "var/lib/hal0/models/etc")!r})
        os.symlink({str(secret)!r}, {str(root / CONFIG)!r} + ".link")
    """)  # fmt: skip
    done = run_cli("uninstall", "--root", root, "--purge", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (root / "var/lib/hal0").exists()
    assert sorted(p.name for p in etc.iterdir()) == before  # passwd etc. still there
    assert secret.read_text() == SECRET
