"""LinkTree: symlink targets walked the way the kernel walks them, through the tree's links."""

from __future__ import annotations

import pytest

from hal0_lemonade import archive_links
from hal0_lemonade.archive_links import MAX_LINK_HOPS, LinkTree

OUT = "resolves outside the release tree through the archive's symlinks"


def _tree(*paths: str, links: dict[str, str] | None = None) -> LinkTree:
    """Directories end in "/", anything else is a file; ``links`` maps path -> target."""
    tree = LinkTree()
    for path in paths:
        tree.add(path.rstrip("/"), is_dir=path.endswith("/"))
    for path, target in (links or {}).items():
        tree.add(path, target=target)
    return tree


RELEASE = ("bin/", "bin/lemond", "lib/", "lib/libx.so.1", "resources/", "resources/d.json")


@pytest.mark.parametrize(
    ("links", "link", "target", "why"),
    [
        # issue row 9: lexically resources/../etc/shadow is inside, the kernel's walk is not
        ({"resources/a": "."}, "resources/x", "a/a/a/a/../../../../etc/shadow", OUT),
        ({"resources/a": "."}, "resources/x", "a/a/../../bin", OUT),  # resources/../..
        ({"resources/a": "."}, "resources/x", "a/a/../bin/lemond", None),
        ({"resources/up": ".."}, "resources/x", "up/..", OUT),
        ({"resources/up": ".."}, "resources/x", "up/up", None),  # /up: not in the tree
        ({"lib/cur": "../bin"}, "lib/x", "cur/../../..", OUT),  # .. of bin/, then of the root
        ({"lib/cur": "../bin"}, "lib/x", "cur/../resources/d.json", None),
        ({"lib/libx.so": "libx.so.1"}, "bin/x", "../lib/libx.so", None),
        # components the tree does not hold are walked lexically: never looser than the kernel
        ({}, "resources/x", "nothing/../../bin/lemond", None),
        ({}, "resources/x", "nothing/../../..", OUT),
        ({}, "resources/x", "d.json/../../bin", None),  # below a file: ENOTDIR at run time
        ({"resources/ping": "pong", "resources/pong": "ping"}, "resources/x", "ping",
         f"needs more than {MAX_LINK_HOPS} symlink hops to resolve (a loop?)"),
        ({"resources/abs": "/etc"}, "resources/x", "abs/..", "resolves outside the release "
         "tree (to an absolute path)"),
        ({}, "newdir/deeper/x", "../../..", OUT),  # from a directory not yet in the tree
    ],
)  # fmt: skip
def test_where_a_link_leads(links: dict[str, str], link: str, target: str, why: str | None) -> None:
    assert _tree(*RELEASE, links=links).why_not(link, target) == why


def _chain(n: int) -> LinkTree:
    """l1 -> l0 -> ... one hop each, l0 -> the file."""
    tree = _tree(*RELEASE, links={"resources/l0": "d.json"})
    for i in range(1, n):
        tree.add(f"resources/l{i}", target=f"l{i - 1}")
    return tree


def test_the_hop_limit_is_the_kernels() -> None:
    # A lookup of l39 follows l39 ... l0: 40 links, as many as Linux follows.
    assert _chain(40).why_not("resources/x", "l39") is None
    assert "more than 40 symlink hops" in str(_chain(41).why_not("resources/x", "l40"))


def test_the_work_of_one_archive_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_links, "MAX_LINK_STEPS", 100)
    tree = _tree(*RELEASE)
    assert tree.why_not("resources/x", "/".join(["a"] * 40)) is None  # 41 steps
    assert tree.why_not("resources/y", "/".join(["a"] * 40)) is None  # 82
    assert tree.why_not("resources/z", "/".join(["a"] * 40)) == (
        "takes the archive's symlinks past 100 resolution steps"
    )
