"""Payload filters as users write them: ``--filter key=value`` (CLI) and ``{"filter": {...}}`` (``/search``).

One grammar that every engine accepts, checked before a query reaches one (a key an engine rejects would
otherwise look like an engine failure and, with a fallback index, an empty answer):

- a key is dotted parts (``meta.lang``), each part letters, digits, ``_`` or ``-``; at most 256 characters;
- a value is a string, a 64-bit integer or a boolean, or a non-empty list of at most 1,024 of them.

Every way in checks it: the CLI, ``/search``, and the Python API (``Collection.search``, ``Searcher``,
each backend's ``search``, the LangChain and LlamaIndex retrievers), all with the same one-line
:class:`FilterError` (a ``ValueError``).

A ``source``/``file`` value written relative also matches the stored absolute path (ingest stores resolved
absolute paths): relative to the working directory for the CLI's ``--filter`` and for text searches through
the Python API (``Collection.search``, ``Searcher.search``/``answer``/``search_batch`` and the
retrievers built on them, see :func:`resolve_filter`), relative to ``source_root`` for ``/search``; a ``#``
may sit anywhere in it (a file named ``notes#1.txt``, or ``file.jsonl#id`` for a record). The raw backends
and ``Searcher.answer_encoded`` take values as given.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

RESERVED = {"text", "source", "file", "doc_id", "chunk", "n_chunks", "content_hash"}  # payload fields
PATH_KEYS = ("source", "file")
MAX_KEY_CHARS = 256
MAX_VALUES = 1024
INT64 = (-(2**63), 2**63 - 1)
_MAX_HASH_SPLITS = 64  # '#' positions tried when a relative source/file value is resolved


class FilterError(ValueError):
    """A filter no engine can run; the message is one line."""


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_key(key: Any) -> str:
    """``key`` if it follows the key grammar, else :class:`FilterError`."""
    if not isinstance(key, str) or not key:
        raise FilterError(f"filter key {key!r}: empty or not a string")
    if len(key) > MAX_KEY_CHARS:
        raise FilterError(f"filter key {key[:40]!r}...: longer than {MAX_KEY_CHARS} characters")
    if any(not part or not all(c.isalnum() or c in "_-" for c in part) for part in key.split(".")):
        raise FilterError(f"filter key {key!r}: use letters, digits, '_' or '-', with '.' between nested fields")
    return key


def check_value(key: str, value: Any) -> list[str | int | bool]:
    """The candidates of one filter value (a list means any of), else :class:`FilterError`."""
    values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    if not values or len(values) > MAX_VALUES:
        raise FilterError(f"filter {key!r}: give one value or a list of 1 to {MAX_VALUES} values")
    for v in values:
        if not isinstance(v, (str, int, bool)):
            raise FilterError(f"filter {key!r}: values must be strings, integers or booleans, not {type(v).__name__}")
        if isinstance(v, int) and not isinstance(v, bool) and not INT64[0] <= v <= INT64[1]:
            raise FilterError(f"filter {key!r}: integer out of the 64-bit range")
        if isinstance(v, str) and not _utf8(v):
            raise FilterError(f"filter {key!r}: a value is not valid Unicode (lone surrogate)")
    return values


def check_filter(flt: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``flt`` if every key and value is valid (see the module docstring), else one-line :class:`FilterError`."""
    if flt is None:
        return None
    if not isinstance(flt, Mapping):
        raise FilterError(f"a filter is an object of field: value, not {type(flt).__name__}")
    for key, value in flt.items():
        check_value(check_key(key), value)
    return dict(flt)


def path_candidates(value: str, root: str | None = None) -> list[str]:
    """Absolute spellings of a relative ``source``/``file`` value (relative to ``root``, default the working
    directory): the whole value, and the part before each ``#`` with the rest kept as a record id; each
    normalised both as written and with symlinks resolved (stored paths are resolved)."""
    if not value or os.path.isabs(value):
        return []
    root = os.path.abspath(root or os.getcwd())
    splits = [len(value)] + [m.start() for m in re.finditer("#", value)][:_MAX_HASH_SPLITS]
    out: list[str] = []
    for i in splits:
        base, rest = value[:i], value[i:]
        if not base:
            continue
        full = os.path.normpath(os.path.join(root, base))
        try:
            resolved = os.path.realpath(full)
        except (ValueError, OSError):  # a NUL byte or an unreadable path: no file has that name
            resolved = full
        for spelling in (full + rest, resolved + rest):
            if spelling not in out and spelling != value:
                out.append(spelling)
    return out


def public_path(path: str, root: str, file: str | None = None) -> str:
    """A stored ``source``/``file`` without its absolute path: relative to ``root``, or just the file name outside it
    (what ``/search`` and LLM prompts show). ``file`` is the point's file, the prefix of a record's ``file#id``
    source."""
    base = file if file and path.startswith(file) else path
    if not os.path.isabs(base):
        return path
    rel = os.path.relpath(base, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        rel = os.path.basename(base)
    return rel.replace(os.sep, "/") + path[len(base):]


def with_absolute_paths(flt: dict[str, Any] | None, root: str | None = None) -> dict[str, Any] | None:
    """``flt`` where each relative ``source``/``file`` value also matches its absolute spellings."""
    if not flt:
        return flt
    out = dict(flt)
    for key in PATH_KEYS:
        if key not in out:
            continue
        values = list(out[key]) if isinstance(out[key], (list, tuple, set, frozenset)) else [out[key]]
        extra = [p for v in values if isinstance(v, str) for p in path_candidates(v, root)]
        if extra:
            out[key] = list(dict.fromkeys([*values, *extra]))
    return out


def resolve_filter(flt: Mapping[str, Any] | None, root: str | None = None) -> dict[str, Any] | None:
    """:func:`check_filter`, then :func:`with_absolute_paths`: the Python API's filter, relative ``source``/``file``
    values resolved against ``root`` (default the working directory) as the CLI's ``--filter`` resolves them."""
    return with_absolute_paths(check_filter(flt), root)


def parse_filter_args(items: Iterable[str]) -> dict[str, list]:
    """``key=value`` strings (CLI) -> ``{key: [candidates]}``; a key outside :data:`RESERVED` means
    ``meta.<key>``; a value also matches as a 64-bit integer or a boolean when it reads as one."""
    out: dict[str, list] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FilterError(f"{item!r}: expected key=value")
        if key not in RESERVED and not key.startswith("meta."):
            key = f"meta.{key}"
        check_key(key)
        values: list = [value]
        if re.fullmatch(r"-?[0-9]{1,19}", value) and INT64[0] <= int(value) <= INT64[1]:
            values.append(int(value))
        if value.lower() in ("true", "false"):
            values.append(value.lower() == "true")
        out.setdefault(key, []).extend(values)
    return with_absolute_paths(out) or {}
