"""Where a release's symlinks really lead, resolved through the symlinks the archive holds.

A lexical check of a link's target is not enough: with ``resources/a -> .``, the target
``a/a/a/a/../../../../etc/shadow`` of ``resources/x`` normalises to a path inside the tree,
yet the kernel follows each ``a`` back to ``resources`` before it applies a ``..``, and ends
up in ``/etc``.  :class:`LinkTree` mirrors the extracted tree (directories, files, symlinks)
and walks a target the way the kernel's path walk does: component by component, following
every symlink it meets, with Linux's limit of 40 links followed per lookup.

A component the archive does not hold (or one below a file) is walked lexically: no lookup
could get past it at run time, and a lexical ``..`` can only make the check stricter.
"""

from __future__ import annotations

# Linux's MAXSYMLINKS: the most links one path lookup follows before it fails with ELOOP.
MAX_LINK_HOPS = 40
# Path components walked, over all the resolutions of one archive: bounds the work a hostile
# archive can ask for (20,000 links of 2,000 components each, chained 40 deep, would be 1.6e9
# steps), while a release's few links, checked twice each, need a few thousand.
MAX_LINK_STEPS = 2_000_000

ESCAPES = "resolves outside the release tree"


class _Node:
    """A path in the tree: a directory (``children``), a symlink (``target``) or a file."""

    __slots__ = ("children", "parent", "target")

    def __init__(self, parent: _Node | None, *, is_dir: bool = False, target: str = "") -> None:
        self.parent = parent
        self.children: dict[str, _Node] | None = {} if is_dir else None
        self.target = target


class LinkTree:
    """The release tree as extracted so far, in memory: one node per path."""

    def __init__(self) -> None:
        self._root = _Node(None, is_dir=True)
        self._steps = 0

    def add(self, rel: str, *, is_dir: bool = False, target: str = "") -> None:
        """Record ``rel`` (below the tree's root; its parent directories are recorded)."""
        parent, _, name = rel.rpartition("/")
        node = self._lookup(parent)
        if node.children is None:
            raise NotADirectoryError(parent)  # the policy refuses a path through a file first
        node.children.setdefault(name, _Node(node, is_dir=is_dir, target=target))

    def _lookup(self, rel: str) -> _Node:
        node = self._root
        for name in rel.split("/") if rel else ():
            node = (node.children or {})[name]
        return node

    def why_not(self, rel: str, target: str) -> str | None:
        """Why the symlink ``rel -> target`` does not stay inside the tree, or None if it does.

        ``target`` is relative (absolute ones are refused before they get here).
        """
        # From the root through the link's directory (which may not be in the tree yet, and
        # holds no symlinks: the policy refuses a path through one), then the target.
        node = self._root
        below = 0  # components walked below ``node`` that the tree does not hold
        todo = f"{rel.rpartition('/')[0]}/{target}".split("/")[::-1]  # the next one last
        hops = 0
        while todo:
            self._steps += 1
            if self._steps > MAX_LINK_STEPS:
                return f"takes the archive's symlinks past {MAX_LINK_STEPS} resolution steps"
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if below:
                    below -= 1
                elif node.parent is None:
                    return f"{ESCAPES} through the archive's symlinks"
                else:
                    node = node.parent
                continue
            child = None if below or node.children is None else node.children.get(name)
            if child is None:
                below += 1
            elif child.target.startswith("/"):  # refused by the policy; here for soundness
                return f"{ESCAPES} (to an absolute path)"
            elif child.target:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    return f"needs more than {MAX_LINK_HOPS} symlink hops to resolve (a loop?)"
                # The kernel goes on from the link's directory (``node``) with its target.
                todo.extend(reversed(child.target.split("/")))
            else:
                node = child
        return None
