"""The ``hal0`` service account and the directories it owns.

The accounts database is read from ``<root>/etc/passwd`` and ``<root>/etc/group`` by a pure
parser; changes go through groupadd/useradd/usermod (with ``--prefix <root>`` for a sandbox
root), so a real install and a sandbox install run the same code.  What a killed or power-cut
shadow-utils command left is rolled back first (:mod:`hal0_lemonade.accountsdb`), and what a
command wrote is synced before the step goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from hal0_lemonade import accountsdb, fsops, safefs, statedirs
from hal0_lemonade.layout import SERVICE_GROUP, SERVICE_USER, HostPath, Layout
from hal0_lemonade.plan import Action, Step
from hal0_lemonade.runner import CommandRunner

STEP = "Service account"
GPU_GROUPS = ("render", "video")
NOLOGIN = "/usr/sbin/nologin"


class PasswdEntry(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str
    shell: str


class GroupEntry(NamedTuple):
    name: str
    gid: int
    members: tuple[str, ...]


class Accounts(NamedTuple):
    users: Mapping[str, PasswdEntry] = MappingProxyType({})
    groups: Mapping[str, GroupEntry] = MappingProxyType({})

    def supplementary(self, user: str) -> set[str]:
        return {g.name for g in self.groups.values() if user in g.members}


def parse_passwd(text: str) -> dict[str, PasswdEntry]:
    users = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[2].isdigit() and fields[3].isdigit():
            users[fields[0]] = PasswdEntry(
                fields[0], int(fields[2]), int(fields[3]), fields[5], fields[6]
            )
    return users


def parse_group(text: str) -> dict[str, GroupEntry]:
    groups = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 4 and fields[2].isdigit():
            members = tuple(m for m in fields[3].split(",") if m)
            groups[fields[0]] = GroupEntry(fields[0], int(fields[2]), members)
    return groups


def probe(layout: Layout) -> Accounts:
    def read(path: HostPath) -> str:
        try:
            return path.real.read_text()
        except FileNotFoundError:
            return ""

    return Accounts(parse_passwd(read(layout.passwd)), parse_group(read(layout.group)))


def owner_ids(layout: Layout) -> tuple[int, int]:
    """uid/gid of the service account, read when an action runs (it may be new)."""
    accounts = probe(layout)
    user = accounts.users.get(SERVICE_USER)
    group = accounts.groups.get(SERVICE_GROUP)
    if user is None or group is None:
        return -1, -1
    return user.uid, group.gid


def owner(layout: Layout) -> safefs.Owner:
    """The hal0 tree's owner as the root's accounts database says now (-1s before it exists)."""
    return safefs.Owner(*owner_ids(layout))


def _prefix(layout: Layout) -> list[str]:
    return [] if layout.is_host_root else ["--prefix", str(layout.root)]


# Directories hal0 owns, with their modes: its home, lemond's cache dir (config.json), the
# models and the Hugging Face cache.  Names relative to the home (/var/lib/hal0).
STATE_DIRS = (
    statedirs.DirSpec("", 0o750),
    statedirs.DirSpec("lemonade", 0o750),
    statedirs.DirSpec("models", 0o750),
    statedirs.DirSpec("huggingface", 0o750),
)


def _dirs_pending(layout: Layout, accounts: Accounts) -> list[str]:
    """What is wrong with each state dir ("missing", a wrong owner, a planted symlink...)."""
    user = accounts.users.get(SERVICE_USER)
    group = accounts.groups.get(SERVICE_GROUP)
    who = safefs.Owner(user.uid, group.gid) if user and group else safefs.Owner()
    pending = []
    for spec in STATE_DIRS:
        problem = statedirs.dir_problem(layout, spec, who)
        if problem or user is None:
            host = layout.at(f"{layout.home}/{spec.name}".rstrip("/"))
            pending.append(f"{host} ({problem})" if problem else str(host))
    return pending


def plan(layout: Layout, accounts: Accounts, runner: CommandRunner) -> Step:
    step = Step(
        STEP,
        hint=f"check {layout.passwd} and {layout.group}; create the account by hand with "
        f"`useradd --system --user-group --home-dir /var/lib/hal0 --shell {NOLOGIN} hal0`",
    )
    prefix = _prefix(layout)
    etc = layout.at("/etc").real

    damage = accountsdb.diagnose(etc)
    if damage is not None:

        def repair() -> str:
            return accountsdb.repair(etc, runner, host=layout.is_host_root, root=layout.root)

        step.actions.append(Action(f"repair the accounts database: {damage.summary()}", repair))
        # Plan against the database as the repair leaves it: a rolled-back useradd runs again.
        accounts = Accounts(
            parse_passwd(damage.after["passwd"]), parse_group(damage.after["group"])
        )

    if not layout.is_host_root:
        # An empty sandbox root has no accounts database for the shadow tools to edit.
        missing = [
            layout.at(p)
            for p in ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")
            if not layout.at(p).real.exists()
        ]
        if missing:

            def seed_db() -> None:
                fsops.make_dirs(etc)
                for path in missing:
                    mode = 0o644 if path.host.name in {"passwd", "group"} else 0o640
                    fsops.atomic_write(path.real, b"", mode=mode)

            step.actions.append(
                Action("create an empty accounts database in the sandbox root", seed_db)
            )

    user = accounts.users.get(SERVICE_USER)
    has_group = SERVICE_GROUP in accounts.groups
    present = [g for g in GPU_GROUPS if g in accounts.groups]
    missing_groups = [g for g in present if g not in accounts.supplementary(SERVICE_USER)]
    if user is None:
        # One useradd makes the user, its group (unless that exists) and the GPU memberships:
        # each shadow-utils call is ~10 ms of fork, exec and lock.
        argv = [
            "useradd", *prefix, "--system",
            *(["--gid", SERVICE_GROUP] if has_group else ["--user-group"]),
            *(["--groups", ",".join(missing_groups)] if missing_groups else []),
            "--home-dir", str(layout.home), "--no-create-home",
            "--shell", NOLOGIN, "--comment", "hal0 Lemonade service", SERVICE_USER,
        ]  # fmt: skip
        what = f"create system user {SERVICE_USER}"
        if not has_group:
            what += f" and group {SERVICE_GROUP}"
        if missing_groups:
            what += f", in {', '.join(missing_groups)} (GPU access)"
        step.actions.append(_command(what, argv, runner, etc))
        missing_groups = []
    else:
        if not has_group:
            argv = ["groupadd", *prefix, "--system", SERVICE_GROUP]
            step.actions.append(_command(f"create system group {SERVICE_GROUP}", argv, runner, etc))
        if user.shell != NOLOGIN and not user.shell.endswith("/false"):
            step.notes.append(f"user {SERVICE_USER} exists with login shell {user.shell}")

    if missing_groups:
        argv = ["usermod", *prefix, "--append", "--groups", ",".join(missing_groups), SERVICE_USER]
        step.actions.append(
            _command(
                f"add {SERVICE_USER} to {', '.join(missing_groups)} (GPU access)",
                argv,
                runner,
                etc,
            )
        )

    pending = _dirs_pending(layout, accounts)
    if pending:

        def make_dirs() -> str:
            # Through directory fds, never by path: hal0 may have planted symlinks here.
            done = statedirs.ensure_dirs(layout, STATE_DIRS, owner(layout))
            return "; ".join(done) or f"{layout.home} and its dirs are sound"

        names = ", ".join(pending)
        step.actions.append(Action(f"create/own {names} as {SERVICE_USER}", make_dirs))

    absent = [g for g in GPU_GROUPS if g not in accounts.groups]
    step.ok_detail = f"{SERVICE_USER} exists" + (
        f" (no {'/'.join(absent)} group on this host)" if absent else ""
    )
    return step


def _command(summary: str, argv: list[str], runner: CommandRunner, etc: Path) -> Action:
    def run() -> str:
        runner.run(argv)
        # Durable before anything builds on it: shadow-utils does not sync /etc (its renames
        # and lock removals), and a power cut must not take back an account we reported.
        accountsdb.sync(etc)
        return summary

    return Action(summary, run, diff="$ " + " ".join(argv) + "\n")
