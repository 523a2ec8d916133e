"""The config.json each release ran with, kept beside it: ``/opt/lemonade.releases/ID.config.json``.

When the live release changes (an upgrade, a rollback, the automatic rollback after an
unhealthy upgrade), the outgoing release's config.json is kept, and the incoming release gets
back the one it last ran with.  So rolling back from 11.x to 10.x restores the version-1 file
10.x ran with (loopback, ``no_broadcast``) instead of leaving it the file 11.x migrated, which
10.x would read as "broadcast on all interfaces"; and going forward again restores what 11.x
ran with.  The copies are root's (in root's release dir, mode 0600): hal0 cannot change what a
rollback restores, though what it wrote to config.json before is what gets kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from hal0_lemonade import configschema, fsops, safefs
from hal0_lemonade.layout import Layout
from hal0_lemonade.resources import account

SUFFIX = ".config.json"


def kept_path(layout: Layout, release_id: str) -> Path:
    return layout.releases.real / f"{release_id}{SUFFIX}"


def keep(layout: Layout, release_id: str) -> bool:
    """Keep the current config.json as ``release_id``'s; False when there is none sound to
    keep (missing, or an object hal0 planted: never read, so never kept)."""
    found = safefs.read_file(
        layout, ["lemonade"], "config.json", account.owner(layout),
        cap=configschema.MAX_CONFIG_BYTES,
    )  # fmt: skip
    if found.raw is None or configschema.parse(found.raw)[0] is None:
        return False
    fsops.atomic_write(kept_path(layout, release_id), found.raw, mode=0o600)
    return True


def load(layout: Layout, release_id: str) -> dict[str, Any] | None:
    """The config ``release_id`` last ran with, or None when none was kept."""
    path = kept_path(layout, release_id)
    try:
        with path.open("rb") as fh:
            raw = fh.read(configschema.MAX_CONFIG_BYTES + 1)
    except OSError:
        return None
    if len(raw) > configschema.MAX_CONFIG_BYTES:
        return None
    return configschema.parse(raw)[0]


class Base(NamedTuple):
    """What the config step starts from before laying the locked keys over it."""

    config: dict[str, Any]
    note: str = ""  # said with the step when it is not simply the file as it is


def base_for(current: dict[str, Any] | None, schema: int, kept: dict[str, Any] | None) -> Base:
    """The config a release speaking ``schema`` starts from: the one it ran with when this
    run switches to it and one was kept, else the current file in its schema; a current
    file in a newer schema (one lemond migrated) is never rewritten down: the release then
    starts from its defaults (the file is kept as config.json.bak)."""
    if kept is not None and configschema.file_schema(kept) == schema:
        return Base(kept, f"restored the config this release ran with ({SUFFIX} kept beside it)")
    if current is None:
        return Base({})
    translated = configschema.translate(current, schema)
    if translated is None:
        return Base(
            {},
            f"config.json is in lemond's version-{configschema.file_schema(current)} schema; "
            f"this release reads version {schema}: starting from its defaults (the file is "
            "kept as config.json.bak)",
        )
    if configschema.file_schema(current) != schema:
        return Base(translated, f"config.json moved to lemond's version-{schema} schema")
    return Base(translated)


def drop(layout: Layout, release_id: str) -> None:
    """Forget the config kept for a release that is being pruned."""
    kept_path(layout, release_id).unlink(missing_ok=True)
