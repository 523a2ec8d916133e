"""`hal0-lemonade doctor`: every check with pass/fail and a hint; exit 1 when any fails.

``status`` answers "is it installed and up?"; ``doctor`` digs: every file of the live tree
against the digests recorded at install time, the version the running daemon reports, who
holds the port, and whether the service user can really open the GPU nodes.  Read-only: the
only commands it runs change nothing (``systemctl show``, and a tiny ``python3 -c`` that
opens the GPU nodes as ``hal0``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from hal0_lemonade import netprobe, opconfig, status
from hal0_lemonade.checks import Check, Report
from hal0_lemonade.driver import Context
from hal0_lemonade.errors import CommandError
from hal0_lemonade.layout import SERVICE_USER
from hal0_lemonade.resources import account, release_tree
from hal0_lemonade.runner import CommandRunner, Identity
from hal0_lemonade.status import INSTALL_HINT, Inspection

SHOWN = 5  # problems named in one check's detail; the JSON carries them all
_CHUNK = 1 << 20
# Run as hal0: open every path read-write (as ROCm and Vulkan do) and report per path.
_OPEN_PROBE = (
    "import errno,json,os,sys\n"
    "r={}\n"
    "for p in sys.argv[1:]:\n"
    " try:\n"
    "  os.close(os.open(p,os.O_RDWR|os.O_CLOEXEC)); r[p]='ok'\n"
    " except OSError as e:\n"
    "  r[p]=errno.errorcode.get(e.errno,str(e.errno))+': '+e.strerror\n"
    "print(json.dumps(r))\n"
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_problems(tree: Path) -> tuple[int, list[str]]:
    """Compare a release tree with its install manifest: (files checked, problems by name)."""
    manifest = release_tree.read_manifest(tree)
    if manifest is None:
        return 0, [f"{release_tree.MANIFEST} is missing or unreadable"]
    files, links = manifest.files, manifest.links
    problems: list[str] = []
    for rel, rec in files.items():
        path = tree / rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            problems.append(f"{rel}: missing")
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{rel}: no longer a regular file")
        elif st.st_size != rec["size"]:
            problems.append(f"{rel}: size {st.st_size}, recorded {rec['size']}")
        elif _sha256(path) != rec["sha256"]:
            problems.append(f"{rel}: content changed (sha256 differs from the manifest)")
        elif stat.S_IMODE(st.st_mode) != rec["mode"]:
            problems.append(f"{rel}: mode {stat.S_IMODE(st.st_mode):o}, recorded {rec['mode']:o}")
    for rel, target in links.items():
        path = tree / rel
        if not path.is_symlink() or str(path.readlink()) != target:
            problems.append(f"{rel}: symlink no longer points to {target}")
    known = {*files, *links, release_tree.MANIFEST, release_tree.MARKER}
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree).as_posix()
        st = path.lstat()
        if rel not in known and not stat.S_ISDIR(st.st_mode):
            problems.append(f"{rel}: not part of the release (added after install)")
        if st.st_uid != 0 or (not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022):
            problems.append(f"{rel}: writable by others than root (owner uid {st.st_uid})")
    return len(files), problems


def files_check(i: Inspection) -> Check:
    layout = i.layout
    tree = layout.live.real
    if not tree.is_dir():
        return Check("files", False, f"{layout.live} is missing", INSTALL_HINT)
    count, problems = tree_problems(tree)
    if not problems:
        return Check("files", True, f"{count} files match the install manifest")
    named = "; ".join(problems[:SHOWN])
    more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    detail = f"{len(problems)} problem(s) in {layout.live}: {named}{more}"
    if i.release.problem:  # install's own (size-only) check sees it too
        hint = f"{INSTALL_HINT}: it reinstalls the release from a verified archive"
    else:
        hint = (
            "install checks sizes only and will not notice this: "
            "`hal0-lemonade install --reinstall` re-extracts the release from a verified "
            "archive (the download cache, so no network is needed); then find out who "
            "changed it"
        )
    return Check("files", False, detail, hint, tuple(problems))


def version_check(i: Inspection) -> Check:
    if i.host.no_systemd:
        return Check("version", None, i.host.no_systemd)
    answer = i.health
    if answer is None:
        return Check("version", None, "lemond does not answer; see the healthy check")
    running = answer.get("version")
    marker = i.release.version
    if not isinstance(running, str) or not running:
        return Check("version", None, "lemond's health answer carries no version")
    if marker is not None and running.lstrip("v") == marker.lstrip("v"):
        return Check("version", True, f"lemond {running} runs, as installed")
    return Check(
        "version",
        False,
        f"lemond {running} runs, but {i.layout.marker} says {marker}",
        "restart it to run the installed release: `systemctl restart hal0-lemonade`",
    )


def account_check(i: Inspection) -> Check:
    accounts = account.probe(i.layout)
    user = accounts.users.get(SERVICE_USER)
    if user is None:
        return Check("account", False, f"no {SERVICE_USER} user in {i.layout.passwd}", INSTALL_HINT)
    present = [g for g in account.GPU_GROUPS if g in accounts.groups]
    missing = [g for g in present if g not in accounts.supplementary(SERVICE_USER)]
    if missing:
        return Check(
            "account",
            False,
            f"{SERVICE_USER} is not in {', '.join(missing)}",
            f"{INSTALL_HINT}, or `usermod -aG {','.join(missing)} {SERVICE_USER}`",
        )
    groups = ", ".join(sorted(accounts.supplementary(SERVICE_USER))) or "no supplementary groups"
    return Check("account", True, f"{SERVICE_USER} (uid {user.uid}) in {groups}")


def gpu_nodes(dev_dir: Path) -> list[Path]:
    """/dev/kfd and /dev/dri/renderD* where they exist as character devices."""
    candidates = [dev_dir / "kfd", *sorted((dev_dir / "dri").glob("renderD*"))]
    found = []
    for path in candidates:
        try:
            if stat.S_ISCHR(path.stat().st_mode):
                found.append(path)
        except OSError:
            continue
    return found


def _open_as(runner: CommandRunner, who: Identity, nodes: list[Path]) -> dict[str, str] | str:
    """Each node's open() result as ``who``, or why there is none.

    The process runs as hal0, so hal0 could ptrace it: the runner hands it nothing of root's
    (no terminal, no descriptors, its own session) and caps what it may print; its answer is
    hal0's to choose, so it is checked for shape before use.
    """
    argv = ["python3", "-I", "-c", _OPEN_PROBE, *map(str, nodes)]
    try:
        done = runner.run(argv, check=False, timeout=30, run_as=who)
        answer = json.loads(done.stdout)
    except CommandError as exc:
        return exc.message
    except (ValueError, RecursionError):
        return "no parsable answer"
    if not isinstance(answer, dict) or set(answer) != {str(n) for n in nodes}:
        return "it answered about other paths than the ones asked"
    return {p: r if isinstance(r, str) else repr(r) for p, r in answer.items()}


def gpu_check(i: Inspection, dev_dir: Path) -> Check:
    layout, runner = i.layout, i.host.runner
    nodes = gpu_nodes(dev_dir)
    if not nodes:
        return Check("gpu", None, f"no kfd or dri/renderD* nodes in {dev_dir}: no GPU exposed")
    accounts = account.probe(layout)
    user = accounts.users.get(SERVICE_USER)
    if user is None:
        return Check("gpu", False, f"cannot test GPU access: no {SERVICE_USER} user", INSTALL_HINT)
    if os.geteuid() != 0:
        return Check("gpu", None, f"run doctor as root to test GPU access as {SERVICE_USER}")
    # The account as the root's accounts database defines it (what systemd's User= gets);
    # numeric ids, so a sandbox root's hal0 is tested without existing on this host.
    gids = sorted({accounts.groups[g].gid for g in accounts.supplementary(SERVICE_USER)})
    results = _open_as(runner, Identity(user.uid, user.gid, tuple(gids)), nodes)
    if isinstance(results, str):
        return Check("gpu", False, f"the GPU self-test could not run as hal0: {results}")
    opened = [p for p, r in results.items() if r == "ok"]
    failed = {p: r for p, r in results.items() if r != "ok"}
    if not failed:
        return Check("gpu", True, f"{SERVICE_USER} can open {', '.join(opened)}")
    named = "; ".join(f"{p} ({r})" for p, r in failed.items())
    first = next(iter(failed))
    also = f"; can open {', '.join(opened)}" if opened else ""
    return Check(
        "gpu",
        False,
        f"{SERVICE_USER} cannot open {named}{also}",
        f"group membership is not enough when the node's own mode shuts hal0 out: "
        f"`chgrp render {first} && chmod 0660 {first}` (the unit's ExecStartPre does this for "
        "/dev/kfd at start; LXC resets it on boot), and check the container's device rules",
    )


def port_check(i: Inspection) -> Check:
    layout, port, main_pid = i.layout, i.port, i.host.main_pid
    listeners = netprobe.listeners(port)
    if not listeners:
        return Check("port", True, f"nothing else listens on port {port}")
    holders = netprobe.holders({lst.inode for lst in listeners})
    if not holders:
        return Check(
            "port",
            False,
            f"port {port} is held by a process this user cannot see",
            "run doctor as root to see which process",
        )
    others = [h for h in holders if not netprobe.is_service(h, main_pid, layout.daemon.real)]
    if not others:
        pids = ", ".join(str(h.pid) for h in holders)
        return Check("port", True, f"port {port} is held by lemond (pid {pids})")
    named = "; ".join(f"pid {h.pid} ({h.describe()})" for h in others)
    return Check(
        "port",
        False,
        f"port {port} is held by {named}, not lemond",
        f"stop it, or move lemond: `port = N` in {opconfig.PATH}, then re-run the install",
    )


def command(dev_dir: Path | None) -> Callable[[Context], Report]:
    """Every check in reading order: status's, with the deeper ones among them."""

    def build(ctx: Context) -> Report:
        devices = dev_dir if dev_dir is not None else ctx.layout.at("/dev").real
        checks: tuple[status.CheckFn, ...] = (
            status.release_check,
            files_check,
            status.marker_check,
            version_check,
            status.operator_check,
            status.state_check,
            status.config_check,
            status.unit_check,
            account_check,
            lambda i: gpu_check(i, devices),
            status.enabled_check,
            status.active_check,
            status.healthy_check,
            port_check,
        )
        return status.run(ctx.host, checks)

    return build
