"""Terminal-safe text for human-readable output (JSON output keeps the stored text as is)."""

from __future__ import annotations

import re
import unicodedata

# ESC sequences: OSC (title, hyperlinks, clipboard) up to BEL/ST, CSI (colours, cursor, erase), 2-char ESC
_ESCAPES = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b\[[0-?]*[ -/]*[@-~]?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]?")
_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


def printable(text: str) -> str:
    """``text`` without terminal control: escape sequences and control characters removed (tabs and
    newlines become spaces), bidi overrides dropped, lone surrogates shown as ``?``."""
    text = _ESCAPES.sub("", text).translate(_BIDI)
    text = "".join(" " if c in "\t\n\r" else c for c in text if c in "\t\n\r" or unicodedata.category(c) != "Cc")
    return text.encode("utf-8", "replace").decode("utf-8")
