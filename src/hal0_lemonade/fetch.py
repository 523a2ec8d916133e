"""Artifact sources as byte streams that are hashed while they are read.

Nothing downstream trusts a byte until :meth:`HashingReader.verify` has compared the digest of
the *whole* artifact with the pin.  A local file is a :class:`FileBody`; an http(s) URL is a
``download.HttpBody`` (its own module, imported only when something is downloaded).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from hal0_lemonade.errors import FetchError, IntegrityError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = 256 * 1024
Progress = Callable[[int, "int | None"], None]


class Body(Protocol):
    """Where the bytes come from: ``read`` returns b"" at the end."""

    total: int | None

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


def is_remote(artifact: str) -> bool:
    return urlsplit(artifact).scheme in {"http", "https"}


def local_path(artifact: str) -> Path:
    parts = urlsplit(artifact)
    if parts.scheme == "file":
        if parts.netloc not in {"", "localhost"}:
            raise FetchError(f"file URL with a remote host is not supported: {artifact}")
        return Path(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:
        raise FetchError(
            f"unsupported artifact scheme {parts.scheme!r}: {artifact}",
            hint="use an http(s):// or file:// URL, or a plain path",
        )
    return Path(artifact)


class FileBody:
    def __init__(self, path: Path) -> None:
        try:
            self._fh: BinaryIO = path.open("rb")
        except FileNotFoundError as exc:
            raise FetchError(
                f"artifact not found: {path}",
                hint="check the path given to --artifact (a local file or a file:// URL)",
            ) from exc
        except IsADirectoryError as exc:
            raise FetchError(
                f"artifact is a directory, not an archive: {path}",
                hint="--artifact names the .tar.gz archive itself, not its directory",
            ) from exc
        except PermissionError as exc:
            raise FetchError(
                f"artifact is not readable: {path}", hint="check the file's mode and owner"
            ) from exc
        self.total: int | None = os.fstat(self._fh.fileno()).st_size

    def read(self, size: int) -> bytes:
        return self._fh.read(size)

    def close(self) -> None:
        self._fh.close()


class HashingReader(io.RawIOBase):
    """A readable that hashes every byte and optionally tees new bytes to a file."""

    def __init__(
        self,
        body: Body,
        *,
        prefix: BinaryIO | None = None,
        tee: BinaryIO | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__()
        self._body = body
        self._prefix = prefix
        self._tee = tee
        self._progress = progress
        self._hash = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (b"" at the end), as the body returned them: no copy."""
        if size is None or size < 0:
            return self.readall()
        data = b""
        if self._prefix is not None:
            data = self._prefix.read(size)
            if not data:
                self._prefix = None
        if not data:
            data = self._body.read(size)
            if data and self._tee is not None:
                self._tee.write(data)
        n = len(data)
        self._hash.update(data)
        self.bytes_read += n
        if self._progress is not None and n:
            self._progress(self.bytes_read, self._body.total)
        return data

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read to the end, so the digest covers bytes the archive reader did not need."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def verify(self, expected: str, *, what: str) -> None:
        self.drain()
        actual = self.hexdigest()
        if actual != expected:
            raise IntegrityError(
                f"SHA-256 mismatch for {what}: expected {expected}, got {actual}",
                hint="the archive is corrupt or not the pinned release; nothing was installed. "
                "Check the mirror, or the --sha256 you gave",
            )


def read_partial_meta(meta: Path) -> dict[str, str]:
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
