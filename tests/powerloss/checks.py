"""What must hold after a power cut: the accounts database whole, consistent and old or new;
everything a successful run reported still there."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hal0_lemonade.cli import main
from tests.faults.scenarios import (
    World,
    clean_env,
    content,
    live_tree,
    read_config,
    verify_tree,
)

DBS = ("passwd", "shadow", "group", "gshadow")
FIELDS = {"passwd": 7, "shadow": 9, "group": 4, "gshadow": 4}
# What shadow-utils leaves when it is interrupted (X+, X.lock, X.<pid>, newer versions'
# X.cioXXXXXX), and an atomic write's temp file (.X.tmp-XXXXXXXX).  Written out here rather than
# taken from the code under test.
SHADOW_LEFTOVER = re.compile(r"^(passwd|shadow|group|gshadow)(\+|\.lock|\.\d+|\.cio.*)$")
TEMP = re.compile(r"^\..*\.tmp-")

WANTS = "etc/systemd/system/multi-user.target.wants/hal0-lemonade.service"

Accounts = dict[str, bytes | None]


@dataclass(frozen=True)
class PowerWorld:
    """The kill-point suite's world, with each scenario's start root in an ext4 image."""

    world: World
    images: dict[str, Path]


def accounts(root: Path) -> Accounts:
    return {db: _read(root / "etc" / db) for db in DBS}


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _names(text: str) -> set[str]:
    return {line.split(":", 1)[0] for line in text.splitlines() if line}


def check_accounts(root: Path, old: Accounts, new: Accounts, *, temps: bool = False) -> None:
    """No shadow-utils leftovers in /etc (nor our temp files, unless ``temps``: a run killed in
    a write leaves one for the next run to remove); each file whole (every line with its
    fields, a final newline); every user in passwd with a shadow line and every group with a
    gshadow line; and the four files together the ``old`` database or the ``new`` one.  Where
    the old one lacks a file, an empty one is old too: a fresh sandbox root gets an empty
    database (one file at a time) before useradd."""
    etc = root / "etc"
    found = accounts(root)
    leftovers = sorted(
        p.name
        for p in (etc.iterdir() if etc.is_dir() else ())
        if SHADOW_LEFTOVER.match(p.name) or (not temps and TEMP.match(p.name))
    )
    assert not leftovers, f"left in /etc: {leftovers}"
    texts = {db: raw.decode() for db, raw in found.items() if raw is not None}
    for db, text in texts.items():
        assert not text or text.endswith("\n"), f"/etc/{db} ends mid-line"
        for line in text.splitlines():
            assert line.count(":") == FIELDS[db] - 1, f"/etc/{db}: broken line {line!r}"
    for primary, shadow in (("passwd", "shadow"), ("group", "gshadow")):
        if primary in texts and shadow in texts:
            missing = _names(texts[primary]) - _names(texts[shadow])
            assert not missing, f"in /etc/{primary} but not in /etc/{shadow}: {sorted(missing)}"
    is_old = all(found[db] in (raw, b"" if raw is None else raw) for db, raw in old.items())
    assert is_old or found == new, f"the accounts database is neither old nor new: {found}"


def rerun(world: World, root: Path) -> dict[str, Any]:
    """Run the install in this process (as the kill-point suite does); its --json report."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), clean_env():
        code = main(world.args(root))
    assert code == 0, out.getvalue()
    report: dict[str, Any] = json.loads(out.getvalue())
    return report


def check_reported(report: dict[str, Any], root: Path, ref: Path) -> None:
    """Everything a successful run reported is there, compared with an uninterrupted run."""
    assert report["ok"], report
    for step in report["steps"]:
        name, status = step["name"], step["status"]
        lost = f"{name!r} reported {status} ({step['detail']}), lost in the cut"
        if status == "skipped":
            continue
        if name == "Lemonade release":
            assert verify_tree((root / "opt/lemonade").resolve()) == report["version"], lost
            assert live_tree(root) == live_tree(ref), lost
        elif name == "Service account":
            assert accounts(root) == accounts(ref), lost
            # The state dirs (mode, owner); config.json in them is the config step's.
            home = {
                k: v for k, v in content(ref).items() if k.startswith("var/lib/hal0") and not v[3]
            }
            assert {k: v for k, v in content(root).items() if k in home} == home, lost
        elif name == "Daemon config":
            assert read_config(root) == read_config(ref), lost
        elif name == "systemd unit":
            unit = "etc/systemd/system/hal0-lemonade.service"
            assert _read(root / unit) == _read(ref / unit), lost
        elif name == "Service start":
            record = "opt/lemonade.releases/no-start"
            assert _read(root / record) == _read(ref / record), f"the --no-start record: {lost}"
            if (ref / WANTS).is_symlink():
                assert (root / WANTS).is_symlink(), f"the enable link: {lost}"
                assert (root / WANTS).readlink() == (ref / WANTS).readlink(), lost
