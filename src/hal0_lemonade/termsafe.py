"""Text that another party wrote, made safe to print on root's terminal.

config.json, lemond's health answer, a process's command line, a symlink's target: ``hal0``
or another local user chose those bytes.  Printed raw, an escape sequence can rewrite what
root sees (hide a line, fake a ``PASS``), set the window title, or on some terminals answer
back into the shell; bidirectional-override and zero-width characters can make one text read
as another.  Every such character is shown as a visible escape (``\\x1b``, ``\\u202e``)
instead.  The renderer passes everything it prints through here, so no code path can forget.
"""

from __future__ import annotations


def _visible(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str, *, keep: str = "") -> str:
    """``text`` with every non-printable character (C0/C1 controls, escape, format and
    bidirectional controls, separators other than space) except those in ``keep`` escaped."""
    if text.isprintable():  # the common case: one C-level scan, no copy
        return text
    return "".join(c if c.isprintable() or c in keep else _visible(c) for c in text)


def escape_block(text: str) -> str:
    """Like :func:`escape`, keeping line breaks and tabs (diffs, multi-line output)."""
    return escape(text, keep="\n\t")
