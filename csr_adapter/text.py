"""Text predicates shared by the corpus readers and the query paths."""

from __future__ import annotations

import unicodedata

_INVISIBLE = {"Cc", "Cf"}  # control characters; format characters (zero-width space/joiners, BOM, bidi marks)


def blank(text: str) -> bool:
    """``text`` has nothing to embed: only whitespace, control and zero-width/format characters (or nothing).

    The backbone's tokenizer drops such characters, so a text made of them alone would be embedded as an
    empty sequence (the same vector for every such text) instead of being treated as empty."""
    return all(c.isspace() or unicodedata.category(c) in _INVISIBLE for c in text)
