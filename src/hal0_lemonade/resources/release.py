"""The Lemonade release tree: /opt/lemonade -> /opt/lemonade.releases/<version>-<sha12>.

Releases are immutable directories; ``/opt/lemonade`` is a symlink to the live one and
``/opt/lemonade.releases/previous`` to the one before, so installing, upgrading and rolling
back are each one atomic rename of a symlink, and the live path is never a half-extracted mix.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from hal0_lemonade import archive, configschema, failpoints, fetch, fsops
from hal0_lemonade.errors import ArchiveError, Hal0Error, IntegrityError
from hal0_lemonade.layout import Layout
from hal0_lemonade.plan import Action, Step
from hal0_lemonade.releases import Pin
from hal0_lemonade.resources import config_history, preflight
from hal0_lemonade.resources.daemon_config import Target
from hal0_lemonade.runner import CommandRunner, SubprocessRunner

STEP = "Lemonade release"
MANIFEST = ".hal0-manifest.json"
MARKER = ".installed-version"
STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class ReleaseState:
    exists: bool
    target: str | None  # the live symlink's target; None for a seed-era plain directory
    version: str | None
    sha256: str | None
    verified: bool
    problem: str  # empty when the tree is intact


def format_marker(pin: Pin) -> str:
    # Line 1 stays the bare version: that is all the seed's shell installer compared.
    verified = "yes" if pin.verified else "no (HAL0_SKIP_LEMONADE_SHA=1)"
    return f"{pin.version}\nsha256={pin.sha256}\nverified={verified}\n"


def parse_marker(text: str) -> tuple[str | None, dict[str, str]]:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        return None, {}
    fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    return lines[0].strip(), fields


@dataclass(frozen=True)
class Manifest:
    """What a release tree held when it was installed (``.hal0-manifest.json``)."""

    files: dict[str, dict[str, Any]]  # name -> {"size", "sha256", "mode"}
    links: dict[str, str]  # name -> target


def read_manifest(tree: Path) -> Manifest | None:
    """The tree's install manifest; None when it is missing or unreadable."""
    try:
        doc = json.loads((tree / MANIFEST).read_text())
        files, links = doc["files"], doc.get("links", {})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict) or not isinstance(links, dict):
        return None
    return Manifest(files, links)


def _intact(tree: Path) -> str:
    """Cheap integrity check (stat only): required files and the recorded sizes."""
    for required in archive.REQUIRED_FILES:
        if not (tree / required).is_file():
            return f"{required} is missing"
    manifest = read_manifest(tree)
    if manifest is None:
        return "the install manifest is missing or unreadable"
    for rel, rec in manifest.files.items():
        try:
            st = (tree / rel).lstat()
        except OSError:
            return f"{rel} is missing"
        if st.st_size != rec["size"]:
            return f"{rel} changed size"
    return ""


def probe(layout: Layout) -> ReleaseState:
    live = layout.live.real
    if not live.exists():
        return ReleaseState(False, None, None, None, False, "not installed")
    target = str(live.readlink()) if live.is_symlink() else None
    try:
        version, fields = parse_marker(layout.marker.real.read_text())
    except OSError:
        version, fields = None, {}
    problem = _intact(live) if version else "no .installed-version marker"
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
    why = state.problem if state.version == pin.version and state.problem else f"was {was}"
    if installer.reusable(pin) is not None:
        how = f"switch to the complete release kept at {layout.releases}/{pin.release_id}"
    else:
        source = "cached download" if installer.cache_hit(pin) else pin.artifact
        how = f"fetch {source}, verify SHA-256"
    step.actions.append(
        Action(
            f"{how}, install {pin.version} at {layout.live} ({why})",
            lambda: installer.install(pin),
            diff=f"-version {was}\n+version {pin.version}\n",
        )
    )
    return step


class Installer:
    """Fetch -> verify -> extract to staging -> swap live, with a digest-keyed cache."""

    def __init__(
        self,
        layout: Layout,
        *,
        runner: CommandRunner | None = None,
        target: Target | None = None,
        http_timeout: float = 30.0,
        http_deadline: float = 1800.0,
        limits: archive.Limits | None = None,
        progress: fetch.Progress | None = None,
    ) -> None:
        self.layout = layout
        self.runner: CommandRunner = runner if runner is not None else SubprocessRunner()
        # What the config step writes for: this step sets the real schema of the release it
        # puts live, and, when it switches releases, the config the incoming one ran with.
        self.target = target if target is not None else Target(1)
        self.http_timeout = http_timeout
        self.http_deadline = http_deadline
        self.limits = limits
        self.progress = progress

    # -- the download cache ----------------------------------------------------------------
    def _cache_file(self, pin: Pin) -> Path:
        return self.layout.download_cache.real / f"{pin.sha256}.tar.gz"

    def cache_hit(self, pin: Pin) -> bool:
        return pin.verified and fetch.is_remote(pin.artifact) and self._cache_file(pin).is_file()

    # -- install ---------------------------------------------------------------------------
    def reusable(self, pin: Pin) -> Path | None:
        """A complete, verified tree of ``pin`` already on disk but not live.

        That is the previous release after a rollback, or a release a killed run had fully
        staged but not yet switched to: going live with it needs no download at all.
        """
        tree = self.layout.releases.real / pin.release_id
        live = self.layout.live.real
        if not tree.is_dir() or tree.is_symlink():
            return None
        if live.is_symlink() and live.readlink().name == tree.name:
            return None
        version, fields = _marker_of(tree)
        verified = fields.get("verified", "").startswith("yes")
        if (version, fields.get("sha256"), verified) != (pin.version, pin.sha256, pin.verified):
            return None
        return tree if not _intact(tree) else None

    def install(self, pin: Pin, *, fresh: bool = False) -> str:
        """Install ``pin``; ``fresh`` re-extracts even when a tree of it is kept or live."""
        releases = self.layout.releases.real
        releases.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._clean_staging()
        kept = None if fresh else self.reusable(pin)
        if kept is not None:
            # Checked when it was staged, but the host may have changed since (a library
            # removed): checked again before it goes live.
            self.target.schema = preflight.check(kept, pin.version, self.runner)
            self._go_live(kept.name)
            self.prune()
            return f"installed {pin.version} (the complete release kept in {kept.parent.name})"
        staging = releases / f"{STAGING_PREFIX}{fsops.random_hex(4)}"
        staging.mkdir(mode=0o755)
        try:
            with _EarlySync(staging) as early:
                extracted, how, download = self._fetch_into(pin, staging)
                early.stop()  # a flush still running overlaps the records and the last one
                # Will it run here, as hal0 needs it?  Refused now, nothing was promoted.
                self.target.schema = preflight.check(staging, pin.version, self.runner)
                self._write_records(staging, pin, extracted)
                if download is not None and download.stat().st_dev != staging.stat().st_dev:
                    fsops.fsync_file(download)  # the syncfs below covers it only on one fs
                fsops.syncfs(staging)  # one flush for the new tree and the downloaded archive
            if download is not None:
                self._keep_download(pin, download)
            failpoints.hit("release.staged")
            final = self._final_name(pin)
            staging.rename(final)
            fsops.fsync_dir(releases)
        except BaseException:
            fsops.remove_tree(staging)
            raise
        failpoints.hit("release.renamed")
        self._go_live(final.name, same_release=pin.release_id if fresh else None)
        failpoints.hit("release.live")
        self.prune()
        return f"installed {pin.version} ({how}, {extracted.total_bytes // 1_000_000} MB)"

    def _final_name(self, pin: Pin) -> Path:
        releases = self.layout.releases.real
        final = releases / pin.release_id
        if not final.exists() and not final.is_symlink():
            return final
        referenced = {
            link.readlink().name
            for link in (self.layout.live.real, self.layout.previous.real)
            if link.is_symlink()
        }
        if final.name not in referenced:
            fsops.remove_tree(final)  # an incomplete or unverifiable tree nothing points at
            return final
        return releases / f"{pin.release_id}.{fsops.random_hex(3)}"

    def _fetch_into(self, pin: Pin, staging: Path) -> tuple[archive.Extracted, str, Path | None]:
        """Extract ``pin`` into ``staging``: the extracted tree, where it came from, and the
        complete download still to be kept in the cache (None if nothing was downloaded)."""
        if self.cache_hit(pin):
            try:
                body = fetch.FileBody(self._cache_file(pin))
                return self._extract(body, pin, staging), "from the download cache", None
            except IntegrityError:
                # A corrupt cache entry is not the operator's problem: drop it and download.
                self._cache_file(pin).unlink(missing_ok=True)
                fsops.remove_tree(staging)
                staging.mkdir(mode=0o755)
        if not fetch.is_remote(pin.artifact):
            body = fetch.FileBody(fetch.local_path(pin.artifact))
            return self._extract(body, pin, staging), "from a local file", None
        extracted, part = self._download(pin, staging)
        return extracted, "downloaded", part

    def _download(self, pin: Pin, staging: Path) -> tuple[archive.Extracted, Path | None]:
        """Download and extract; a verified download is teed to ``<sha>.tar.gz.part`` in the
        cache, which :meth:`_keep_download` renames once it is on disk."""
        from hal0_lemonade import download  # urllib & co.: only paid when downloading

        if not pin.verified:
            # Nothing to key a cache entry by: stream straight through.
            body = download.HttpBody(
                pin.artifact,
                timeout=self.http_timeout,
                deadline=self.http_deadline,
                max_bytes=download.download_cap(self.limits or archive.Limits()),
            )
            return self._extract(body, pin, staging), None
        cache = self.layout.download_cache.real
        cache.mkdir(mode=0o755, parents=True, exist_ok=True)
        part = cache / f"{pin.sha256}.tar.gz.part"
        meta = cache / f"{pin.sha256}.tar.gz.part.json"
        kept = part.stat().st_size if part.is_file() else 0
        saved = fetch.read_partial_meta(meta) if kept else {}
        if saved.get("url") != pin.artifact:
            kept = 0
        body = download.HttpBody(
            pin.artifact,
            timeout=self.http_timeout,
            deadline=self.http_deadline,
            max_bytes=download.download_cap(self.limits or archive.Limits()),
            offset=kept,
            validator=saved.get("validator") or None,
        )
        if body.restarted or not kept:
            part.unlink(missing_ok=True)
            kept = 0
        meta.write_text(json.dumps({"url": pin.artifact, "validator": body.validator or ""}))
        with part.open("ab") as tee:
            prefix: BinaryIO | None = part.open("rb") if kept else None
            try:
                extracted = self._extract(body, pin, staging, prefix=prefix, tee=tee)
            except (IntegrityError, ArchiveError):
                part.unlink(missing_ok=True)  # bad bytes must not seed a later resume
                meta.unlink(missing_ok=True)
                raise
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    # On a full disk a kept partial download only holds the space hostage.
                    part.unlink(missing_ok=True)
                    meta.unlink(missing_ok=True)
                raise
            finally:
                if prefix is not None:
                    prefix.close()
        return extracted, part

    def _keep_download(self, pin: Pin, part: Path) -> None:
        """The verified, synced download becomes the cache entry (a kill before this leaves a
        complete ``.part``, which the next download finds whole: a 416, no re-download)."""
        part.rename(self._cache_file(pin))
        part.with_name(part.name + ".json").unlink(missing_ok=True)
        fsops.fsync_dir(part.parent)

    def _extract(
        self,
        body: fetch.Body,
        pin: Pin,
        staging: Path,
        *,
        prefix: BinaryIO | None = None,
        tee: BinaryIO | None = None,
    ) -> archive.Extracted:
        reader = fetch.HashingReader(body, prefix=prefix, tee=tee, progress=self.progress)
        what = f"Lemonade {pin.version} ({pin.artifact})"
        try:
            try:
                extracted = archive.extract(cast(BinaryIO, reader), staging, self.limits)
            except ArchiveError:
                # A digest mismatch explains a broken archive better than the archive error.
                if pin.verified:
                    reader.verify(pin.sha256, what=what)
                raise
            if pin.verified:
                reader.verify(pin.sha256, what=what)
            else:
                reader.drain()
        finally:
            body.close()
        expected_top = f"lemonade-embeddable-{pin.version}-"
        if not extracted.top.startswith(expected_top):
            raise ArchiveError(
                f"the archive holds {extracted.top!r}, not Lemonade {pin.version}",
                hint=f"pass the --version that matches the archive ({expected_top}<arch>/)",
            )
        return extracted

    def _write_records(self, tree: Path, pin: Pin, extracted: archive.Extracted) -> None:
        manifest = {
            "version": pin.version,
            "sha256": pin.sha256,
            "verified": pin.verified,
            "artifact": pin.artifact,
            "files": {
                rel: {"size": rec.size, "sha256": rec.sha256, "mode": rec.mode}
                for rel, rec in sorted(extracted.files.items())
            },
            "links": dict(sorted(extracted.links.items())),
        }
        # Plain writes: the staging tree is synced as a whole before it is renamed into view.
        fsops.write_new(tree / MANIFEST, json.dumps(manifest, indent=1).encode())
        fsops.write_new(tree / MARKER, format_marker(pin).encode())

    # -- pointers --------------------------------------------------------------------------
    def _go_live(self, release_name: str, *, same_release: str | None = None) -> None:
        """Point live at ``release_name``; the old live one becomes ``previous``.

        ``same_release``: a reinstall of that release id. The tree it replaces is a copy of
        the same release (possibly damaged), not something to roll back to, so ``previous``
        stays as it is.
        """
        live = self.layout.live.real
        releases = self.layout.releases.real
        rel_prefix = releases.name + "/"
        link = str(live.readlink()) if live.is_symlink() else None
        old = link.removeprefix(rel_prefix) if link is not None else None
        replacing_itself = same_release is not None and (old or "").startswith(same_release)
        switching = old is not None and old != release_name and not replacing_itself
        if switching:
            assert old is not None  # noqa: S101 - for mypy: switching implies it
            # What the outgoing release ran with, kept beside it for a rollback to it.
            config_history.keep(self.layout, old)
            fsops.point_symlink(self.layout.previous.real, old)
        displaced = fsops.point_symlink(live, rel_prefix + release_name)
        if displaced is not None:
            # A seed-era /opt/lemonade directory: keep it as the previous release.
            legacy = releases / f"legacy-{fsops.random_hex(3)}"
            displaced.rename(legacy)
            fsops.point_symlink(self.layout.previous.real, legacy.name)
            config_history.keep(self.layout, legacy.name)
            fsops.fsync_dir(releases)
        if switching or displaced is not None:
            # The incoming release gets back the config it last ran with, if it ran here.
            self.target.kept = config_history.load(self.layout, release_name)
            self.target.switching = True

    def _clean_staging(self) -> None:
        for entry in self.layout.releases.real.iterdir():
            if entry.name.startswith(STAGING_PREFIX):
                fsops.remove_tree(entry)

    def _unneeded(self) -> list[Path]:
        """Release trees, staging dirs and cached downloads neither live nor previous needs."""
        releases = self.layout.releases.real
        if not releases.is_dir():
            return []
        keep = {"previous"}
        shas: set[str] = set()
        for link in (self.layout.live.real, self.layout.previous.real):
            if link.is_symlink():
                target = link.readlink().name
                keep.update((target, f"{target}{config_history.SUFFIX}"))
                version, fields = _marker_of(releases / target)
                if version and "sha256" in fields:
                    shas.add(fields["sha256"])
        found = [entry for entry in releases.iterdir() if entry.name not in keep]
        cache = self.layout.download_cache.real
        if cache.is_dir():
            for entry in cache.iterdir():
                sha = entry.name.split(".", 1)[0]
                if entry.name.endswith(".tar.gz") and sha not in shas:
                    found.append(entry)
                elif ".tar.gz.part" in entry.name and sha in shas:
                    found.append(entry)  # a partial download of a release already on disk
        return sorted(found)

    def leftovers(self) -> list[str]:
        return [
            str(self.layout.at("/" + str(p.relative_to(self.layout.root))))
            for p in self._unneeded()
        ]

    def prune(self) -> None:
        """Keep the live and the previous release (and their cached archives) only."""
        for entry in self._unneeded():
            fsops.remove_tree(entry)
        failpoints.hit("release.pruned")


class _EarlySync:
    """While a release is fetched and extracted, flush its filesystem, starting a flush every
    ``INTERVAL`` s, or at once when the last one took longer than that.

    Only earlier, never instead: the final ``syncfs`` before the rename still decides.  Most
    of a flush's cost is waiting for the disk (on a virtual disk, for the host to write what it
    buffered); flushing as the files arrive overlaps that wait with the inflating and leaves
    the final flush little to do.  A cold install writes faster than the disks we measured
    take it, so a flush usually outlasts the interval; the next one then starts right away
    (a fixed pause after each flush left the disk idle that long each time: ~0.05 s per
    install on the bench).  The thread mostly sleeps in the kernel.
    """

    INTERVAL = 0.05

    def __init__(self, path: Path) -> None:
        self._path = path
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hal0-early-sync", daemon=True)

    def _run(self) -> None:
        syncfs = fsops.libc_function("syncfs")
        if syncfs is None:  # pragma: no cover - not glibc: the final syncfs does it all
            return
        fd = os.open(self._path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            pause = self.INTERVAL
            while not self._done.wait(pause):
                started = time.monotonic()
                syncfs(fd)  # best effort: an error here is the final syncfs's to report
                pause = max(0.0, self.INTERVAL - (time.monotonic() - started))
        finally:
            os.close(fd)

    def __enter__(self) -> _EarlySync:
        if self.INTERVAL > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        """No more flushes; one in progress finishes on its own (``__exit__`` waits for it)."""
        self._done.set()

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()


def _marker_of(tree: Path) -> tuple[str | None, dict[str, str]]:
    try:
        return parse_marker((tree / MARKER).read_text())
    except OSError:
        return None, {}


# -- rollback --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RollbackPlan:
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
    problem = _intact(tree) if tree.is_dir() else "it is missing"
    prev_version, _ = _marker_of(tree)
    if problem or prev_version is None:
        raise Hal0Error(
            f"the previous release {layout.releases}/{previous} is not intact: "
            f"{problem or 'no marker'}",
            hint=hint,
        )
    cur_version, _ = _marker_of(layout.releases.real / current)
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
