"""The Lemonade release tree: /opt/lemonade -> /opt/lemonade.releases/<version>-<sha12>.

Releases are immutable directories; ``/opt/lemonade`` is a symlink to the live one and
``/opt/lemonade.releases/previous`` to the one before, so installing, upgrading and rolling
back are each one atomic rename of a symlink, and the live path is never a half-extracted mix.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from hal0_lemonade import archive, fetch, fsops
from hal0_lemonade.errors import ArchiveError, IntegrityError
from hal0_lemonade.layout import Layout
from hal0_lemonade.plan import Action, Step
from hal0_lemonade.releases import Pin

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


def _intact(tree: Path) -> str:
    """Cheap integrity check (stat only): required files and the recorded sizes."""
    for required in archive.REQUIRED_FILES:
        if not (tree / required).is_file():
            return f"{required} is missing"
    try:
        manifest = json.loads((tree / MANIFEST).read_text())
        files: dict[str, dict[str, int]] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "the install manifest is missing or unreadable"
    for rel, rec in files.items():
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


def is_current(state: ReleaseState, pin: Pin) -> bool:
    return (
        state.exists
        and state.target is not None
        and not state.problem
        and state.version == pin.version
        and state.sha256 == pin.sha256
        and state.verified == pin.verified
    )


def plan(layout: Layout, pin: Pin, state: ReleaseState, installer: Installer) -> Step:
    step = Step(
        STEP,
        hint="re-run the install; the previous release stays live until the new one is "
        "complete and verified",
    )
    if is_current(state, pin):
        step.ok_detail = f"{pin.version} already installed at {layout.live}"
        return step
    was = state.version or "nothing"
    why = state.problem if state.version == pin.version and state.problem else f"was {was}"
    source = "cached download" if installer.cache_hit(pin) else pin.artifact
    step.actions.append(
        Action(
            f"fetch {source}, verify SHA-256, install {pin.version} at {layout.live} ({why})",
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
        http_timeout: float = 30.0,
        limits: archive.Limits | None = None,
        progress: fetch.Progress | None = None,
    ) -> None:
        self.layout = layout
        self.http_timeout = http_timeout
        self.limits = limits
        self.progress = progress

    # -- the download cache ----------------------------------------------------------------
    def _cache_file(self, pin: Pin) -> Path:
        return self.layout.download_cache.real / f"{pin.sha256}.tar.gz"

    def cache_hit(self, pin: Pin) -> bool:
        return pin.verified and fetch.is_remote(pin.artifact) and self._cache_file(pin).is_file()

    # -- install ---------------------------------------------------------------------------
    def install(self, pin: Pin) -> str:
        releases = self.layout.releases.real
        releases.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._clean_staging()
        staging = releases / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
        staging.mkdir(mode=0o755)
        try:
            extracted, how = self._fetch_into(pin, staging)
            self._write_records(staging, pin, extracted)
            fsops.syncfs(staging)
            final = releases / pin.release_id
            if final.exists():
                final = releases / f"{pin.release_id}.{secrets.token_hex(3)}"
            staging.rename(final)
            fsops.fsync_dir(releases)
        except BaseException:
            fsops.remove_tree(staging)
            raise
        self._go_live(final.name)
        self.prune()
        return f"installed {pin.version} ({how}, {extracted.total_bytes // 1_000_000} MB)"

    def _fetch_into(self, pin: Pin, staging: Path) -> tuple[archive.Extracted, str]:
        if self.cache_hit(pin):
            try:
                return self._extract(fetch.FileBody(self._cache_file(pin)), pin, staging), (
                    "from the download cache"
                )
            except IntegrityError:
                # A corrupt cache entry is not the operator's problem: drop it and download.
                self._cache_file(pin).unlink(missing_ok=True)
                fsops.remove_tree(staging)
                staging.mkdir(mode=0o755)
        if not fetch.is_remote(pin.artifact):
            body = fetch.FileBody(fetch.local_path(pin.artifact))
            return self._extract(body, pin, staging), "from a local file"
        return self._download(pin, staging), "downloaded"

    def _download(self, pin: Pin, staging: Path) -> archive.Extracted:
        if not pin.verified:
            # Nothing to key a cache entry by: stream straight through.
            body = fetch.HttpBody(pin.artifact, timeout=self.http_timeout)
            return self._extract(body, pin, staging)
        cache = self.layout.download_cache.real
        cache.mkdir(mode=0o755, parents=True, exist_ok=True)
        part = cache / f"{pin.sha256}.tar.gz.part"
        meta = cache / f"{pin.sha256}.tar.gz.part.json"
        kept = part.stat().st_size if part.is_file() else 0
        saved = fetch.read_partial_meta(meta) if kept else {}
        if saved.get("url") != pin.artifact:
            kept = 0
        body = fetch.HttpBody(
            pin.artifact,
            timeout=self.http_timeout,
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
            finally:
                if prefix is not None:
                    prefix.close()
            tee.flush()
            os.fsync(tee.fileno())
        part.rename(self._cache_file(pin))
        meta.unlink(missing_ok=True)
        fsops.fsync_dir(cache)
        return extracted

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
        fsops.atomic_write(tree / MANIFEST, json.dumps(manifest, indent=1).encode())
        fsops.atomic_write(tree / MARKER, format_marker(pin).encode())

    # -- pointers --------------------------------------------------------------------------
    def _go_live(self, release_name: str) -> None:
        live = self.layout.live.real
        releases = self.layout.releases.real
        rel_prefix = releases.name + "/"
        old = str(live.readlink()) if live.is_symlink() else None
        if old is not None and old.removeprefix(rel_prefix) != release_name:
            fsops.point_symlink(self.layout.previous.real, old.removeprefix(rel_prefix))
        displaced = fsops.point_symlink(live, rel_prefix + release_name)
        if displaced is not None:
            # A seed-era /opt/lemonade directory: keep it as the previous release.
            legacy = releases / f"legacy-{secrets.token_hex(3)}"
            displaced.rename(legacy)
            fsops.point_symlink(self.layout.previous.real, legacy.name)
            fsops.fsync_dir(releases)

    def _clean_staging(self) -> None:
        for entry in self.layout.releases.real.iterdir():
            if entry.name.startswith(STAGING_PREFIX):
                fsops.remove_tree(entry)

    def prune(self) -> None:
        """Keep the live and the previous release (and their cached archives) only."""
        releases = self.layout.releases.real
        keep = {"previous"}
        shas: set[str] = set()
        for link in (self.layout.live.real, self.layout.previous.real):
            if link.is_symlink():
                target = link.readlink().name
                keep.add(target)
                version, fields = _marker_of(releases / target)
                if version and "sha256" in fields:
                    shas.add(fields["sha256"])
        for entry in releases.iterdir():
            if entry.name not in keep and not entry.name.startswith(STAGING_PREFIX):
                fsops.remove_tree(entry)
        cache = self.layout.download_cache.real
        if cache.is_dir():
            for entry in cache.glob("*.tar.gz"):
                if entry.name.removesuffix(".tar.gz") not in shas:
                    entry.unlink(missing_ok=True)


def _marker_of(tree: Path) -> tuple[str | None, dict[str, str]]:
    try:
        return parse_marker((tree / MARKER).read_text())
    except OSError:
        return None, {}
