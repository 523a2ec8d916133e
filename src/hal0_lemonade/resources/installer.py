"""Putting a release tree on disk: fetch -> verify -> extract to staging -> preflight -> promote.

Nothing of a release is trusted before the digest of the whole archive matched, and nothing
goes live before the tree is complete, checked on this host (:mod:`preflight`) and synced: a
kill at any moment leaves the old release live or the new one.  Downloads are cached by
digest, and a partial one is resumed.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import BinaryIO, cast

from hal0_lemonade import archive, failpoints, fetch, fsops
from hal0_lemonade.errors import ArchiveError, IntegrityError
from hal0_lemonade.layout import Layout
from hal0_lemonade.releases import Pin
from hal0_lemonade.resources import preflight, release_links, release_tree
from hal0_lemonade.resources.daemon_config import Target
from hal0_lemonade.runner import CommandRunner, SubprocessRunner


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
        # Wall seconds of each phase of the last install (the bench reads them; cheap).
        self.timings: dict[str, float] = {}
        self._made: list[Path] = []  # directories this run created (the download cache)

    # -- the download cache ----------------------------------------------------------------
    def _cache_file(self, pin: Pin) -> Path:
        return self.layout.download_cache.real / f"{pin.sha256}.tar.gz"

    def cache_hit(self, pin: Pin) -> bool:
        return pin.verified and fetch.is_remote(pin.artifact) and self._cache_file(pin).is_file()

    # -- what neither link needs ------------------------------------------------------------
    def leftovers(self) -> list[str]:
        return release_links.leftovers(self.layout)

    def prune(self) -> None:
        release_links.prune(self.layout)

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
        version, fields = release_tree.marker_of(tree)
        verified = fields.get("verified", "").startswith("yes")
        if (version, fields.get("sha256"), verified) != (pin.version, pin.sha256, pin.verified):
            return None
        return tree if not release_tree.intact(tree) else None

    def install(self, pin: Pin, *, fresh: bool = False) -> str:
        """Install ``pin``; ``fresh`` re-extracts even when a tree of it is kept or live.

        A failure leaves no directory this run made (a refused archive on an empty root
        leaves no /opt/lemonade.releases), except a download cache holding a partial
        download, which a re-run resumes.
        """
        made = fsops.mkdirs(self.layout.releases.real)
        try:
            return self._install(pin, fresh=fresh)
        except BaseException:
            fsops.remove_if_empty([*self._made, *made])
            raise

    def _install(self, pin: Pin, *, fresh: bool) -> str:
        releases = self.layout.releases.real
        release_links.clean_staging(self.layout)
        kept = None if fresh else self.reusable(pin)
        if kept is not None:
            # Checked when it was staged, but the host may have changed since (a library
            # removed): checked again before it goes live.
            self.target.schema = preflight.check(kept, pin.version, self.runner)
            release_links.go_live(self.layout, kept.name, self.target)
            release_links.prune(self.layout)
            return f"installed {pin.version} (the complete release kept in {kept.parent.name})"
        staging = releases / f"{release_tree.STAGING_PREFIX}{fsops.random_hex(4)}"
        staging.mkdir(mode=0o755)
        clock = _Phases(self.timings)
        try:
            with _EarlySync(staging) as early:
                with clock("fetch+verify+extract"):
                    extracted, how, download = self._fetch_into(pin, staging)
                early.stop()  # a flush still running overlaps the records and the last one
                with clock("manifest+marker"):
                    self._write_records(staging, pin, extracted)
                if download is not None and download.stat().st_dev != staging.stat().st_dev:
                    fsops.fsync_file(download)  # the syncfs below covers it only on one fs
                with clock("preflight+syncfs"):
                    # Will it run here, as hal0 needs it?  Refused now, nothing was promoted.
                    # The one flush for the new tree and the download runs meanwhile.
                    self.target.schema = preflight.check(
                        staging, pin.version, self.runner, beside=lambda: fsops.syncfs(staging)
                    )
            if download is not None:
                self._keep_download(pin, download)
            failpoints.hit("release.staged")
            if fresh and self._repair_in_place(pin, staging):
                # The damaged tree, swapped out under the staging name: nothing needs it.
                fsops.remove_tree(staging)
                failpoints.hit("release.live")
                release_links.prune(self.layout)
                return f"reinstalled {pin.version} in place ({how})"
            final = self._final_name(pin)
            staging.rename(final)
            fsops.fsync_dir(releases)
        except BaseException:
            fsops.remove_tree(staging)
            raise
        failpoints.hit("release.renamed")
        release_links.go_live(
            self.layout, final.name, self.target, same_release=pin.release_id if fresh else None
        )
        failpoints.hit("release.live")
        release_links.prune(self.layout)
        return f"installed {pin.version} ({how}, {extracted.total_bytes // 1_000_000} MB)"

    def _repair_in_place(self, pin: Pin, staging: Path) -> bool:
        """A ``--reinstall`` of the live release: swap the fresh tree with the damaged one in
        one atomic step, so the live link never moves and the release keeps its own name
        (``<version>-<sha12>``).  False where the kernel cannot swap, or live is elsewhere."""
        tree = self.layout.releases.real / pin.release_id
        live = self.layout.live.real
        if not (live.is_symlink() and live.readlink().name == tree.name and tree.is_dir()):
            return False
        if not fsops.exchange(staging, tree):
            return False
        fsops.fsync_dir(tree.parent)
        return True

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
        self._made += fsops.mkdirs(cache)
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
        fsops.write_new(tree / release_tree.MANIFEST, json.dumps(manifest, indent=1).encode())
        fsops.write_new(tree / release_tree.MARKER, release_tree.format_marker(pin).encode())


class _Phases:
    """``with phases("name"):`` adds the block's wall seconds to ``timings["name"]``."""

    def __init__(self, timings: dict[str, float]) -> None:
        self._timings = timings
        self._name = ""
        self._started = 0.0

    def __call__(self, name: str) -> _Phases:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        spent = time.monotonic() - self._started
        self._timings[self._name] = self._timings.get(self._name, 0.0) + spent


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
