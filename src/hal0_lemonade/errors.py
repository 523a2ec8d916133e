"""One small exception tree.

Every error carries what failed (``message``), what to do about it (``hint``) and, once the
applier knows it, the step it happened in.  The CLI catches :class:`Hal0Error` once and maps
it to an exit code; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class Hal0Error(Exception):
    """Base of every error this installer raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", step: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.step = step


class UsageError(Hal0Error):
    """Bad flags or flag combinations: exit 2, like click's own usage errors."""

    exit_code = 2


class IntegrityError(Hal0Error):
    """A digest did not match, or a pin cannot be trusted."""


class FetchError(Hal0Error):
    """The artifact could not be read (network fault, missing file, HTTP error)."""


class ArchiveError(Hal0Error):
    """The archive is broken, hostile, or lacks what a Lemonade release must contain."""


class CommandError(Hal0Error):
    """A host command (useradd, systemctl, ...) failed."""


class ServiceError(Hal0Error):
    """The service did not become active and healthy."""


class LockError(Hal0Error):
    """Another install holds the lock."""
