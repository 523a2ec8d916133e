"""The links that make a release live: /opt/lemonade and /opt/lemonade.releases/previous.

Releases are immutable directories; ``/opt/lemonade`` is a symlink to the live one and
``previous`` to the one before, so going live, upgrading and rolling back are each one atomic
rename of a symlink, and the live path is never a half-extracted mix.  What neither link needs
(old trees, staging dirs a killed run left, cached archives of neither) is pruned.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from hal0_lemonade import failpoints, fsops
from hal0_lemonade.errors import Hal0Error
from hal0_lemonade.layout import Layout
from hal0_lemonade.resources import config_history
from hal0_lemonade.resources.daemon_config import Target
from hal0_lemonade.resources.release_tree import STAGING_PREFIX, intact, marker_of


def go_live(
    layout: Layout, release_name: str, target: Target, *, same_release: str | None = None
) -> None:
    """Point live at ``release_name``; the old live one becomes ``previous``.

    ``same_release``: a reinstall of that release id. The tree it replaces is a copy of
    the same release (possibly damaged), not something to roll back to, so ``previous``
    stays as it is.
    """
    live = layout.live.real
    releases = layout.releases.real
    rel_prefix = releases.name + "/"
    link = str(live.readlink()) if live.is_symlink() else None
    old = link.removeprefix(rel_prefix) if link is not None else None
    replacing_itself = same_release is not None and (old or "").startswith(same_release)
    switching = old is not None and old != release_name and not replacing_itself
    if switching:
        assert old is not None  # noqa: S101 - for mypy: switching implies it
        # What the outgoing release ran with, kept beside it for a rollback to it.
        config_history.keep(layout, old)
        fsops.point_symlink(layout.previous.real, old)
    displaced = fsops.point_symlink(live, rel_prefix + release_name)
    if displaced is not None:
        # A seed-era /opt/lemonade directory: keep it as the previous release.
        legacy = releases / f"legacy-{fsops.random_hex(3)}"
        displaced.rename(legacy)
        fsops.point_symlink(layout.previous.real, legacy.name)
        config_history.keep(layout, legacy.name)
        fsops.fsync_dir(releases)
    if switching or displaced is not None:
        # The incoming release gets back the config it last ran with, if it ran here.
        target.kept = config_history.load(layout, release_name)
        target.switching = True


def clean_staging(layout: Layout) -> None:
    for entry in layout.releases.real.iterdir():
        if entry.name.startswith(STAGING_PREFIX):
            fsops.remove_tree(entry)


def unneeded(layout: Layout) -> list[Path]:
    """Release trees, staging dirs and cached downloads neither live nor previous needs."""
    releases = layout.releases.real
    if not releases.is_dir():
        return []
    keep = {"previous", layout.no_start.real.name}
    shas: set[str] = set()
    for link in (layout.live.real, layout.previous.real):
        if link.is_symlink():
            target = link.readlink().name
            keep.update((target, f"{target}{config_history.SUFFIX}"))
            version, fields = marker_of(releases / target)
            if version and "sha256" in fields:
                shas.add(fields["sha256"])
    found = [entry for entry in releases.iterdir() if entry.name not in keep]
    cache = layout.download_cache.real
    if cache.is_dir():
        for entry in cache.iterdir():
            sha = entry.name.split(".", 1)[0]
            if entry.name.endswith(".tar.gz") and sha not in shas:
                found.append(entry)
            elif ".tar.gz.part" in entry.name and sha in shas:
                found.append(entry)  # a partial download of a release already on disk
    return sorted(found)


def leftovers(layout: Layout) -> list[str]:
    return [str(layout.at("/" + str(p.relative_to(layout.root)))) for p in unneeded(layout)]


def prune(layout: Layout) -> None:
    """Keep the live and the previous release (and their cached archives) only."""
    for entry in unneeded(layout):
        fsops.remove_tree(entry)
    failpoints.hit("release.pruned")


class RollbackPlan(NamedTuple):
    current: str  # release dir names
    previous: str
    current_version: str
    previous_version: str


def rollback_plan(layout: Layout) -> RollbackPlan:
    """What ``roll_back`` would swap; refuses when there is nothing sound to go back to."""
    live, prev = layout.live.real, layout.previous.real
    hint = "install the release you want instead: hal0-lemonade install --version VER"
    if not live.is_symlink():
        raise Hal0Error(
            f"nothing to roll back: {layout.live} is not an installed release", hint=hint
        )
    if not prev.is_symlink():
        raise Hal0Error(
            f"no previous release to roll back to ({layout.previous} does not exist)", hint=hint
        )
    current, previous = live.readlink().name, prev.readlink().name
    if current == previous:
        raise Hal0Error(f"the previous release is the live one ({previous})", hint=hint)
    tree = layout.releases.real / previous
    problem = intact(tree) if tree.is_dir() else "it is missing"
    prev_version, _ = marker_of(tree)
    if problem or prev_version is None:
        raise Hal0Error(
            f"the previous release {layout.releases}/{previous} is not intact: "
            f"{problem or 'no marker'}",
            hint=hint,
        )
    cur_version, _ = marker_of(layout.releases.real / current)
    return RollbackPlan(current, previous, cur_version or "unknown", prev_version)


def roll_back(layout: Layout, planned: RollbackPlan | None = None) -> str:
    """Swap live and previous: two atomic symlink renames, the live one first.

    The config the outgoing release ran with is kept beside it first (for going forward
    again); the caller restores the one the incoming release ran with.  A kill between the
    two renames leaves the old release live and both links on it; the release rolled back
    from is then unreferenced and pruned by the next install.
    """
    what = planned or rollback_plan(layout)
    prefix = layout.releases.real.name + "/"
    config_history.keep(layout, what.current)
    fsops.point_symlink(layout.live.real, prefix + what.previous)
    failpoints.hit("rollback.live")
    fsops.point_symlink(layout.previous.real, what.current)
    return f"rolled back from {what.current_version} to {what.previous_version}"
