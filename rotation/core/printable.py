"""Text from outside made safe to print (pure).

Event ids, gateway instance names, a Secret's contents and blob names come from whoever could write
them. Printed raw, a terminal control sequence in one rewrites the operator's screen (ESC[1A moves
up a line: a `skipped` event shows as `replayed`), and a bidi override (U+202E) reverses what follows.
Every character that is not printable (Unicode categories C*, Z* other than the space: what
`str.isprintable` rejects) is shown as a Python-style escape instead.
"""

from __future__ import annotations


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` with every non-printable character escaped (a backslash stays as it is)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def printable_lines(text: str) -> str:
    """`printable`, keeping line breaks and tabs: for whole lines of output."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\t" else _escape(ch) for ch in text)
