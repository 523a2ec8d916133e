"""Pinned Lemonade releases (package data) and how a requested release is resolved.

Upstream publishes no checksum file beside its archives, so the pin in ``releases.json`` is
the only thing that makes a download trustworthy.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from hal0_lemonade import pkgdata
from hal0_lemonade.errors import IntegrityError, UsageError

PLACEHOLDER_SHA256 = "0" * 64
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A version becomes part of paths and URLs: keep it to a conservative alphabet.
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+~-]{0,63}$")


class Pin(NamedTuple):
    """The release to install and the digest it must have."""

    version: str
    artifact: str  # http(s) URL, file:// URL or a plain path
    sha256: str  # lower-case hex; the placeholder only when verification was waived
    verified: bool  # False only when HAL0_SKIP_LEMONADE_SHA=1 waived a placeholder pin
    source: str  # where the digest came from: "pin" or "--sha256"

    @property
    def release_id(self) -> str:
        """Directory name of this release under /opt/lemonade.releases."""
        suffix = self.sha256[:12] if self.verified else "unverified"
        return f"{self.version}-{suffix}"


def load_manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(pkgdata.read_text("data/releases.json"))
    return manifest


def validate_version(version: str) -> str:
    candidate = version.removeprefix("v")
    if not _VERSION.match(candidate) or ".." in candidate:
        raise UsageError(
            f"invalid --version {version!r}",
            hint="give a release version such as 10.6.0",
        )
    return candidate


def validate_sha256(value: str) -> str:
    digest = value.strip().lower()
    if not _SHA256.match(digest):
        raise UsageError(
            f"invalid --sha256 {value!r}: expected 64 hexadecimal digits",
            hint="take the digest from `sha256sum <archive>` on a trusted copy",
        )
    return digest


def resolve(
    version: str | None,
    artifact: str | None,
    sha256: str | None,
    *,
    skip_sha: bool,
    manifest: dict[str, Any] | None = None,
) -> Pin:
    """Turn the operator's request into a Pin, refusing anything that cannot be verified."""
    manifest = manifest if manifest is not None else load_manifest()
    wanted = validate_version(version) if version else str(manifest["default"])
    pinned: dict[str, Any] | None = manifest["releases"].get(wanted)
    name = str(manifest["name_template"]).format(version=wanted)
    url = str(manifest["url_template"]).format(version=wanted, name=name)

    if sha256 is not None:
        digest, source = validate_sha256(sha256), "--sha256"
    elif artifact is not None:
        raise UsageError(
            "--artifact needs --sha256",
            hint="an archive from elsewhere is only trusted against a digest you give",
        )
    elif pinned is None:
        raise UsageError(
            f"version {wanted} has no pinned digest",
            hint=f"pass --sha256 for {name}, or use a pinned version: "
            + ", ".join(sorted(manifest["releases"])),
        )
    else:
        digest, source = str(pinned["sha256"]), "pin"

    verified = True
    if digest == PLACEHOLDER_SHA256:
        if not skip_sha:
            raise IntegrityError(
                f"the digest for Lemonade {wanted} is the all-zeros placeholder",
                hint="pin the real SHA-256 of the archive, or set HAL0_SKIP_LEMONADE_SHA=1 "
                "to install it unverified (development only)",
            )
        verified = False
    return Pin(wanted, artifact or url, digest, verified, source)
