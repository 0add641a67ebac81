"""Text predicates shared by the corpus readers and the query paths."""

from __future__ import annotations

import unicodedata

_INVISIBLE = {"Cc", "Cf"}  # control characters; format characters (zero-width space/joiners, BOM, bidi marks)


def blank(text: str) -> bool:
    """``text`` has nothing to embed: only whitespace, control and zero-width/format characters (or nothing).

    The backbone's tokenizer drops such characters, so a text made of them alone would be embedded as an
    empty sequence (the same vector for every such text) instead of being treated as empty."""
    return all(c.isspace() or unicodedata.category(c) in _INVISIBLE for c in text)


def json_loads(text: str):
    """``json.loads``, with input nested too deeply for the parser reported as a :class:`json.JSONDecodeError`
    (Python's parser recurses: 100,000 ``[`` raise ``RecursionError``, which would abort a whole run)."""
    import json

    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text[:80], 0) from None


def check_utf8(text: str, what: str) -> str:
    """``text`` if it encodes as UTF-8; a one-line ``ValueError`` naming ``what`` for a lone surrogate (a JSON
    ``\\ud800`` escape decodes to one, and no tokenizer, store or encoder takes it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what}: not valid Unicode text (lone surrogate U+{ord(text[exc.start]):04X} at "
                         f"character {exc.start + 1})") from None
    return text
