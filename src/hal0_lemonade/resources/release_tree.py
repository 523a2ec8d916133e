"""A release tree on disk: its marker (``.installed-version``), its install manifest
(``.hal0-manifest.json``) and the cheap check that it is still whole.

Shared by the step that reads the live tree (:mod:`release`), the installer that writes
trees (:mod:`installer`) and the links that switch between them (:mod:`release_links`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from hal0_lemonade import archive
from hal0_lemonade.releases import Pin

MANIFEST = ".hal0-manifest.json"
MARKER = ".installed-version"
STAGING_PREFIX = ".staging-"


def format_marker(pin: Pin) -> str:
    # Line 1 stays the bare version: that is all hal0's bash installer compares.
    verified = "yes" if pin.verified else "no (HAL0_SKIP_LEMONADE_SHA=1)"
    return f"{pin.version}\nsha256={pin.sha256}\nverified={verified}\n"


def parse_marker(text: str) -> tuple[str | None, dict[str, str]]:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        return None, {}
    fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    return lines[0].strip(), fields


class Manifest(NamedTuple):
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


def intact(tree: Path) -> str:
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


def marker_of(tree: Path) -> tuple[str | None, dict[str, str]]:
    try:
        return parse_marker((tree / MARKER).read_text())
    except OSError:
        return None, {}
