"""The ``Lemonade release`` step: what is live (its marker, its manifest), and the plan.

/opt/lemonade -> /opt/lemonade.releases/<version>-<sha12>: the tree is put there by
:mod:`installer` and made live by :mod:`release_links`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from hal0_lemonade import configschema, fetch
from hal0_lemonade.errors import FetchError
from hal0_lemonade.layout import Layout
from hal0_lemonade.plan import Action, Step
from hal0_lemonade.releases import Pin
from hal0_lemonade.resources import config_history, preflight
from hal0_lemonade.resources.daemon_config import Target
from hal0_lemonade.resources.release_tree import intact, parse_marker

if TYPE_CHECKING:
    from hal0_lemonade.resources.installer import Installer

STEP = "Lemonade release"


class ReleaseState(NamedTuple):
    exists: bool
    target: str | None  # the live symlink's target; None for a seed-era plain directory
    version: str | None
    sha256: str | None
    verified: bool
    problem: str  # empty when the tree is intact


def probe(layout: Layout) -> ReleaseState:
    live = layout.live.real
    if not live.exists():
        return ReleaseState(False, None, None, None, False, "not installed")
    target = str(live.readlink()) if live.is_symlink() else None
    try:
        version, fields = parse_marker(layout.marker.real.read_text())
    except OSError:
        version, fields = None, {}
    problem = intact(live) if version else "no .installed-version marker"
    return ReleaseState(
        True,
        target,
        version,
        fields.get("sha256"),
        fields.get("verified", "").startswith("yes"),
        problem,
    )


def target_for(layout: Layout, pin: Pin, state: ReleaseState, installer: Installer) -> Target:
    """What the config step will write for, as far as planning can know: the schema of the
    tree that will be live (predicted from the version when it is not on disk yet), and
    whether this run switches releases, with the config the incoming one last ran with."""
    if is_current(state, pin):
        return Target(preflight.tree_schema(layout.live.real))
    kept_tree = installer.reusable(pin)
    schema = (
        preflight.tree_schema(kept_tree)
        if kept_tree is not None
        else configschema.predicted(pin.version)
    )
    switching = state.target is not None and not state.target.endswith(pin.release_id)
    kept = config_history.load(layout, pin.release_id) if switching else None
    return Target(schema, kept, switching)


def is_current(state: ReleaseState, pin: Pin) -> bool:
    return (
        state.exists
        and state.target is not None
        and not state.problem
        and state.version == pin.version
        and state.sha256 == pin.sha256
        and state.verified == pin.verified
    )


def plan(
    layout: Layout, pin: Pin, state: ReleaseState, installer: Installer, *, reinstall: bool = False
) -> Step:
    step = Step(
        STEP,
        hint="re-run the install; the previous release stays live until the new one is "
        "complete and verified",
    )
    current = is_current(state, pin)
    if current and reinstall:
        # The cheap integrity check compares sizes only; --reinstall re-extracts from a
        # verified archive, which also repairs same-size tampering that `doctor` found.
        source = "cached download" if installer.cache_hit(pin) else pin.artifact
        step.actions.append(
            Action(
                f"reinstall {pin.version} at {layout.live} from {source} (--reinstall)",
                lambda: installer.install(pin, fresh=True),
            )
        )
        return step
    if current:
        step.ok_detail = f"{pin.version} already installed at {layout.live}"
        litter = installer.leftovers()
        if litter:
            # What an interrupted run left behind; an uninterrupted one would have pruned it.
            def tidy() -> str:
                installer.prune()
                return f"{pin.version} already installed; removed {len(litter)} leftover(s)"

            step.actions.append(
                Action(f"remove leftovers of an interrupted run: {', '.join(litter)}", tidy)
            )
        return step
    was = state.version or "nothing"
    old_id, new_id = was, pin.version
    if state.version == pin.version and state.problem:
        why = state.problem
    elif state.version == pin.version:
        # The same version from another archive (an --artifact install, then a plain one):
        # say so, or "-version 10.6.0 / +version 10.6.0" reads as a change of nothing.
        old_id = _identity(state.sha256, state.verified)
        new_id = _identity(pin.sha256, pin.verified)
        asker = "the pin" if pin.source == "pin" else pin.source
        why = (
            f"the installed {was} is archive {old_id}, {asker} asks for {new_id}: "
            "another archive of the same version"
        )
        old_id, new_id = f"{was} ({old_id})", f"{pin.version} ({new_id})"
    else:
        why = f"was {was}"
    if installer.reusable(pin) is not None:
        how = f"switch to the complete release kept at {layout.releases}/{pin.release_id}"
    else:
        source = "cached download" if installer.cache_hit(pin) else pin.artifact
        how = f"fetch {source}, verify SHA-256"
    step.actions.append(
        Action(
            f"{how}, install {pin.version} at {layout.live} ({why})",
            lambda: installer.install(pin),
            diff=f"-version {old_id}\n+version {new_id}\n",
        )
    )
    return step


def _identity(sha256: str | None, verified: bool) -> str:
    return f"sha256 {sha256[:12]}" if sha256 and verified else "unverified"


def check_source(layout: Layout, pin: Pin) -> None:
    """A local archive the install would read must be there and be a file: refused before
    anything is planned or locked, dry run or not (nothing to read when it is installed)."""
    if fetch.is_remote(pin.artifact) or is_current(probe(layout), pin):
        return
    path = fetch.local_path(pin.artifact)
    if not path.exists():
        raise FetchError(
            f"artifact not found: {path}",
            hint="check the path given to --artifact (a local file or a file:// URL)",
        )
    if not path.is_file():
        raise FetchError(
            f"artifact is not a file: {path}",
            hint="--artifact names the .tar.gz archive itself, not its directory",
        )
