"""Read a corpus into documents and split them into token windows for the encoder.

Input: a folder (recursive), one file, or ``-`` (JSONL on stdin). Formats: .txt .md .rst (as is),
.html/.htm (visible text), .json (an object or a list of objects), .jsonl/.ndjson (one object a
line, optionally .gz), .csv (one row a document). Records take their text from ``text_field``
(default ``text``; ``title`` is prepended when present), their id from ``_id``/``id`` and keep other
scalar fields as user metadata.

Never crashes on bad input: hidden entries, symlink loops, symlinks out of the folder (unless
``follow_links``), oversized (``.gz`` by its decompressed size, read streaming), binary (NUL bytes),
non-UTF-8, malformed JSON/CSV and empty files are skipped and reported with a reason. A JSONL file with
one malformed line is skipped whole, so its previously ingested documents stay as they were; a record
with lone surrogates (``"\\ud800"``) is skipped on its own, and so is a stdin line that is not valid
UTF-8. A skipped record never deletes what is stored: its document (or, when its id cannot be read, every
document of its file that is missing from the run) keeps its stored points.
"""

from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NamedTuple

from .errors import CSRAdapterError
from .text import blank, json_loads

TEXT_TYPES = {".txt", ".text", ".md", ".markdown", ".rst"}
HTML_TYPES = {".html", ".htm"}
RECORD_TYPES = {".json", ".jsonl", ".ndjson", ".csv"}
SUPPORTED = TEXT_TYPES | HTML_TYPES | RECORD_TYPES
DEFAULT_MAX_MB = 64.0
CHARS_PER_TOKEN = 16  # chunk text cap = this x max_tokens characters (a long unbroken run is one [UNK] token)
STDIN = "<stdin>"


class CorpusError(CSRAdapterError):
    """The corpus path is missing, empty, or holds nothing that can be ingested."""


@dataclass
class Skip:
    """An input left out of the ingest, and why."""

    path: str
    reason: str
    keep: str | None = None  # a document source (or a whole file) whose stored points must stay

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class Document:
    """One document: ``source`` is its unique key (file path, or ``path#id`` for records)."""

    source: str
    file: str
    text: str
    doc_id: str
    meta: dict[str, Any] = field(default_factory=dict)

    def content_hash(self, salt: str = "") -> str:
        """Hash of text + metadata (+ ``salt``, e.g. the chunking settings): changes when the doc does."""
        digest = hashlib.sha256(self.text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0" + json.dumps(self.meta, sort_keys=True, default=str).encode() + b"\0" + salt.encode())
        return digest.hexdigest()[:32]


@dataclass
class Corpus:
    documents: list[Document]
    files: list[str]  # files read successfully
    seen: list[str]  # every file found (read or skipped), for --prune
    skipped: list[Skip]
    root: str | None  # the folder or file ingested (None for stdin)


@dataclass
class ReaderOptions:
    text_field: str = "text"
    title_field: str = "title"
    id_fields: tuple[str, ...] = ("_id", "id")
    max_bytes: int = int(DEFAULT_MAX_MB * 1e6)  # per file, decompressed
    follow_links: bool = False  # follow symlinks that point out of the ingested folder


class Checked(NamedTuple):
    """The file :func:`walk` checked for a listed path: its resolved path, device and inode."""

    real: str
    dev: int
    ino: int


class BadRecord(ValueError):
    """One record that cannot be stored (lone surrogates): skipped on its own, the file is kept.

    ``source``: the document the record would be (its stored points stay), when known."""

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# -- files ---------------------------------------------------------------------------------------
OUTSIDE = "symlink out of the ingested folder (--follow-links to include it)"


def walk(root: Path, follow_links: bool = False,
         checked: dict[Path, Checked] | None = None) -> tuple[list[Path], list[Skip]]:
    """Files under ``root`` (sorted, symlinks followed once, hidden entries skipped; links that leave
    ``root`` are skipped unless ``follow_links``). ``checked`` receives, per file, the resolved path and the
    identity of the file that passed these checks: :func:`read_file` reads that file or nothing."""
    files, skipped, seen_dirs, seen_files = [], [], set(), set()
    top = os.path.realpath(root)

    def unreadable(exc: OSError) -> None:
        skipped.append(Skip(str(exc.filename), f"unreadable directory ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
        here = Path(dirpath)
        st = here.stat()
        if (st.st_dev, st.st_ino) in seen_dirs:
            skipped.append(Skip(str(here), "symlink loop or directory seen twice"))
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        for d in sorted(dirnames):
            if d.startswith("."):
                skipped.append(Skip(str(here / d), "hidden directory"))
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            if not follow_links and (here / d).is_symlink() and not _inside(os.path.realpath(here / d), top):
                skipped.append(Skip(str(here / d), OUTSIDE))
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = here / name
            if name.startswith("."):
                skipped.append(Skip(str(path), "hidden file"))
                continue
            if not _utf8_ok(str(path)):
                skipped.append(Skip(str(path).encode("utf-8", "backslashreplace").decode(),
                                    "file name is not valid UTF-8"))
                continue
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                skipped.append(Skip(str(path), _unresolved(path, exc)))
                continue
            if not follow_links and not _inside(str(real), top):
                skipped.append(Skip(str(path), OUTSIDE))
                continue
            if real in seen_files:
                skipped.append(Skip(str(path), f"same file as {real}"))
                continue
            try:
                st = os.stat(real, follow_symlinks=False)
            except OSError as exc:
                skipped.append(Skip(str(path), f"unreadable ({exc.strerror or exc})"))
                continue
            seen_files.add(real)
            files.append(path)
            if checked is not None:
                checked[path] = Checked(str(real), st.st_dev, st.st_ino)
    return files, skipped


def _unresolved(path: Path, exc: BaseException) -> str:
    """Why ``path`` (listed in its folder) could not be resolved: the real reason, not a guess. Only a link
    whose target is missing is a broken symlink; anything else (no search permission on the folder, ...) is
    ``unreadable`` (what ``--prune`` never treats as gone)."""
    if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
        return "symlink loop"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return "broken symlink"
        except FileNotFoundError:
            return "vanished while listing"
        except OSError as inner:
            exc = inner
    return f"unreadable ({getattr(exc, 'strerror', None) or exc})"


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    return suffixes[0] if len(suffixes) == 2 and suffixes[1] == ".gz" else path.suffix.lower()


def _decode(data: bytes) -> str:
    """UTF-8 text, or :class:`ValueError` with the reason to skip."""
    if b"\0" in data:
        raise ValueError("binary file (NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


class _HTMLText(HTMLParser):
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "title", "section", "article"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _scalar_meta(record: dict, exclude: set[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    items = list(record.items())
    if isinstance(record.get("metadata"), dict):
        items += list(record["metadata"].items())
    for key, value in items:
        if key in exclude or key == "metadata" or not isinstance(key, str):
            continue
        if isinstance(value, (str, int, float, bool)) or (
            isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value)
        ):
            meta[key] = value
    return meta


def _record_doc(record: Any, file: str, where: str, opts: ReaderOptions) -> Document:
    doc = _build_doc(record, file, where, opts)
    if not all(_utf8_ok(f) for f in (doc.text, doc.doc_id, json.dumps(doc.meta, ensure_ascii=False))):
        raise BadRecord(f"{where}: lone surrogate in the record (not valid Unicode); record skipped", doc.source)
    return doc


def _build_doc(record: Any, file: str, where: str, opts: ReaderOptions) -> Document:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    text = record.get(opts.text_field)
    if not isinstance(text, str):
        raise ValueError(f"{where}: no string {opts.text_field!r} field (set --text-field)")
    title = record.get(opts.title_field)
    if isinstance(title, str) and title.strip():
        text = f"{title.strip()}\n{text}"
    doc_id = _doc_id(record, where, opts)
    meta = _scalar_meta(record, {opts.text_field, opts.title_field, *opts.id_fields})
    return Document(f"{file}#{doc_id}", file, text, doc_id, meta)


def _doc_id(record: dict, where: str, opts: ReaderOptions) -> str:
    return next((str(record[f]) for f in opts.id_fields if record.get(f) not in (None, "")), where)


def parse(text: str, kind: str, file: str, opts: ReaderOptions, skipped: list[Skip] | None = None) -> list[Document]:
    """Documents in one decoded file; :class:`ValueError` (one line) when the file must be skipped.

    With ``skipped``, a :class:`BadRecord` is reported there and parsing goes on; without, it skips the file."""
    return _good(_parse(text, kind, file, opts), file, skipped)


def _good(parsed: list, file: str, skipped: list[Skip] | None) -> list[Document]:
    """The documents of ``parsed``; each :class:`BadRecord` reported in ``skipped`` (raised without it)."""
    out = []
    for doc in parsed:
        if not isinstance(doc, BadRecord):
            out.append(doc)
        elif skipped is None:
            raise doc
        else:
            skipped.append(Skip(file, str(doc), doc.source or file))
    return out


def _records(rows: Any, file: str, opts: ReaderOptions) -> list:
    """``(where, record)`` pairs as documents, a :class:`BadRecord` in place of each bad one."""
    out: list = []
    for where, record in rows:
        try:
            out.append(_record_doc(record, file, where, opts))
        except BadRecord as exc:
            out.append(exc)
    return out


def _parse(text: str, kind: str, file: str, opts: ReaderOptions) -> list:
    if kind in HTML_TYPES:
        return [Document(file, file, html_text(text), Path(file).stem)]
    if kind in (".jsonl", ".ndjson"):
        return _jsonl(enumerate(text.splitlines(), 1), file, opts)
    if kind == ".json":
        try:
            data = json_loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
        items = data if isinstance(data, list) else [data]
        return _records([(f"item {i}" if isinstance(data, list) else "object", r) for i, r in enumerate(items, 1)],
                        file, opts)
    if kind == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if opts.text_field not in (reader.fieldnames or []):
                raise ValueError(f"no {opts.text_field!r} column (columns: {', '.join(reader.fieldnames or [])}; "
                                 "set --text-field)")
            return _records([(f"row {n}", row) for n, row in enumerate(reader, 1)], file, opts)
        except csv.Error as exc:
            raise ValueError(f"bad CSV ({exc})") from None
    return [Document(file, file, text, Path(file).stem)]


def _jsonl(lines: Iterable[tuple[int, str]], file: str, opts: ReaderOptions) -> list:
    """Documents of numbered JSONL lines (see :func:`_records`); a line that is not JSON is a :class:`ValueError`."""
    rows = []
    for n, line in lines:
        if line.strip():
            try:
                rows.append((f"line {n}", json_loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {n}: not JSON ({exc.msg})") from None
    return _records(rows, file, opts)


CHANGED = "changed while it was being read ({}); not read"
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_checked(path: Path, expect: Checked | None) -> int:
    """A descriptor of the regular file at ``path``, opened and then verified in one step: with ``expect``
    (what :func:`walk` checked), ``expect.real`` is opened without following a final symlink and must still be
    the very file checked (device and inode), so a swap after the check reads nothing, never the swapped-in
    target. Non-blocking, so a FIFO swapped in cannot hang the read."""
    target, flags = (path, _OPEN_FLAGS) if expect is None else (expect.real, _OPEN_FLAGS | getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        if expect is not None and exc.errno == errno.ELOOP:
            raise ValueError(CHANGED.format("now a symlink")) from None
        raise
    try:
        st = os.fstat(fd)
        if expect is not None and (st.st_dev, st.st_ino) != (expect.dev, expect.ino):
            raise ValueError(CHANGED.format("replaced by another file"))
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_capped(path: Path, max_bytes: int, expect: Checked | None = None) -> bytes:
    """The file's bytes (decompressed for ``.gz``, streaming), or :class:`ValueError` past ``max_bytes``.

    ``expect``: the identity :func:`walk` checked; the file opened must be that one (see :func:`_open_checked`)."""
    cap = f"{max_bytes / 1e6:.0f} MB cap (--max-file-mb)"
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # refused before it is opened (a device, a FIFO)
            raise ValueError("not a regular file")
        fd = _open_checked(path, expect)
        with os.fdopen(fd, "rb") as raw:
            size = os.fstat(raw.fileno()).st_size
            if size > max_bytes:
                raise ValueError(f"{size / 1e6:.0f} MB is over the {cap}")
            gz = path.suffix.lower() == ".gz"
            with (gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw) as f:
                data = f.read(max_bytes + 1)  # never more than the cap in memory, however well it compresses
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"unreadable ({getattr(exc, 'strerror', None) or exc})") from None
    if len(data) > max_bytes:
        raise ValueError(f"decompresses past the {cap}; not read further" if gz else f"grew past the {cap}")
    return data


def read_file(path: Path, opts: ReaderOptions, explicit: bool = False,
              skipped: list[Skip] | None = None, expect: Checked | None = None) -> list[Document]:
    """Documents of one file, or :class:`ValueError` with the reason to skip it (bad records: see :func:`parse`).

    ``expect``: what :func:`walk` checked for ``path``; only that file is read."""
    kind = _suffix(path)
    if kind not in SUPPORTED and not explicit:
        raise ValueError(f"unsupported file type {kind or '(none)'}")
    text = _decode(_read_capped(path, opts.max_bytes, expect))
    if blank(text):
        raise ValueError("empty")
    return parse(text, kind if kind in SUPPORTED else ".txt", os.path.abspath(path), opts, skipped)


def _dedupe(docs: list[Document], skipped: list[Skip]) -> list[Document]:
    out, seen = [], set()
    for doc in docs:
        if doc.source in seen:
            skipped.append(Skip(doc.source, "duplicate id (kept the first)"))
        elif blank(doc.text):
            skipped.append(Skip(doc.source, "empty text"))
        else:
            seen.add(doc.source)
            out.append(doc)
    return out


def _stdin_lines(data: bytes, opts: ReaderOptions, skipped: list[Skip]) -> Iterator[tuple[int, str]]:
    """Numbered lines of stdin's bytes; a line that is not valid UTF-8 is skipped and reported, and the
    stored document it names (by its id when the rest of the line reads as JSON; else all of stdin's) kept."""
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            keep = STDIN
            try:
                record = json_loads(raw.decode("utf-8", "replace"))
                if isinstance(record, dict):
                    keep = f"{STDIN}#{_doc_id(record, f'line {n}', opts)}"
            except json.JSONDecodeError:
                pass
            skipped.append(Skip(STDIN, f"line {n}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                       f"{exc.start + 1}); line skipped", keep))


def read_stdin(opts: ReaderOptions, stream=None) -> Corpus:
    """JSONL documents from stdin. A line that is not valid UTF-8 and a record with lone surrogates are
    skipped and reported (the rest is ingested); a line that is not JSON is an error (nothing is written)."""
    data = (stream or sys.stdin.buffer).read(opts.max_bytes + 1)
    if len(data) > opts.max_bytes:
        raise CorpusError(f"stdin: over the {opts.max_bytes / 1e6:.0f} MB cap (--max-file-mb)")
    skipped: list[Skip] = []
    try:
        docs = _good(_jsonl(_stdin_lines(data, opts, skipped), STDIN, opts), STDIN, skipped)
    except ValueError as exc:
        raise CorpusError(f"stdin: {exc}") from None
    docs = _dedupe(docs, skipped)
    if not docs:
        why = f" ({skipped[0].reason}{f'; +{len(skipped) - 1} more' if len(skipped) > 1 else ''})" if skipped else ""
        raise CorpusError(f"stdin: no documents (expected one JSON object a line with a 'text' field){why}")
    return Corpus(docs, [STDIN], [STDIN], skipped, None)


def read_corpus(path: str | os.PathLike, opts: ReaderOptions | None = None) -> Corpus:
    """Read a folder, a file or ``-`` (stdin JSONL) into a :class:`Corpus`."""
    opts = opts or ReaderOptions()
    if str(path) == "-":
        return read_stdin(opts)
    root = Path(path).expanduser()
    if not root.exists():
        raise CorpusError(f"{path}: no such file or directory")
    # one spelling per folder (symlinked or relative paths), so sources stay stable between runs
    root = Path(os.path.realpath(root)) if root.is_dir() else Path(os.path.realpath(root.parent)) / root.name
    checked: dict[Path, Checked] = {}
    if root.is_dir():
        files, skipped = walk(root, opts.follow_links, checked)
        if not files and not skipped:
            raise CorpusError(f"{path}: empty folder, nothing to ingest")
    else:
        files, skipped = [root], []
    docs: list[Document] = []
    read: list[str] = []
    for file in files:
        try:
            docs += read_file(file, opts, explicit=not root.is_dir(), skipped=skipped, expect=checked.get(file))
            read.append(os.path.abspath(file))
        except ValueError as exc:
            skipped.append(Skip(str(file), str(exc)))
            if str(exc) == "empty":  # read fine and holds nothing now: its old points are stale
                read.append(os.path.abspath(file))
    docs = _dedupe(docs, skipped)
    if not docs:
        why = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:3]) or "no files"
        more = f" (+{len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise CorpusError(f"{path}: nothing to ingest ({why}{more})")
    return Corpus(docs, read, [os.path.abspath(f) for f in files], skipped, os.path.abspath(root))


# -- chunking --------------------------------------------------------------------------------------
@dataclass
class Chunk:
    text: str
    tokens: int


class Chunker:
    """Token windows of ``max_tokens`` with ``overlap`` tokens shared between neighbours.

    Windows are cut on the backbone's own tokenizer and map back to exact character spans of the
    source text, so each chunk fits the encoder without truncation. A window is also cut to at most
    ``max_chars`` characters (default ``CHARS_PER_TOKEN * max_tokens``): a long run without spaces is
    a single token, and must not become one huge chunk.
    """

    def __init__(self, tokenizer, max_tokens: int, overlap: int, max_chars: int | None = None) -> None:
        if max_tokens <= 0 or not 0 <= overlap < max_tokens:
            raise ValueError(f"need 0 <= overlap < max_tokens, got {overlap} and {max_tokens}")
        if max_chars is not None and max_chars <= 0:
            raise ValueError(f"max_chars must be positive, got {max_chars}")
        self.tokenizer, self.max_tokens, self.overlap = tokenizer, max_tokens, overlap
        self.max_chars = max_chars or CHARS_PER_TOKEN * max_tokens

    @classmethod
    def for_encoder(cls, encoder, overlap: int | None = None) -> Chunker:
        """Windows sized to the backbone's max length (minus special tokens); overlap 1/8 by default."""
        tok = encoder.backbone.tokenizer
        size = encoder.backbone.max_seq_length - tok.num_special_tokens_to_add(pair=False)
        return cls(tok, size, size // 8 if overlap is None else overlap)

    @property
    def signature(self) -> str:
        return f"tokens={self.max_tokens},overlap={self.overlap}"

    def split(self, texts: list[str], batch: int = 256) -> Iterator[list[Chunk]]:
        """For each text, its chunks (none for blank text), in order."""
        import logging

        log = logging.getLogger("transformers.tokenization_utils_base")
        level = log.level
        log.setLevel(logging.ERROR)  # "sequence longer than max length": expected, we cut it here
        try:
            for start in range(0, len(texts), batch):
                part = texts[start:start + batch]
                enc = self.tokenizer(part, add_special_tokens=False, return_offsets_mapping=True,
                                     return_attention_mask=False, return_token_type_ids=False)
                for i, (text, offsets) in enumerate(zip(part, enc["offset_mapping"])):
                    yield self._cap(self._windows(text, offsets, enc.word_ids(i)))
        finally:
            log.setLevel(level)

    def _windows(self, text: str, offsets: list[tuple[int, int]], words: list[int | None]) -> list[Chunk]:
        n = len(offsets)
        if blank(text):
            return []
        if n == 0:
            return [Chunk(text.strip(), 0)]
        if n <= self.max_tokens:
            return [Chunk(text.strip(), n)]

        def inside_word(i: int) -> bool:  # token i continues the word of token i - 1
            return 0 < i < n and words[i] is not None and words[i] == words[i - 1]

        chunks, s = [], 0
        while True:
            e = min(s + self.max_tokens, n)
            b = e
            while inside_word(b) and b > s + self.max_tokens // 2:  # end on a word boundary
                b -= 1
            e = b if not inside_word(b) else e
            chunks.append(Chunk(text[offsets[s][0]:offsets[e - 1][1]].strip(), e - s))
            if e >= n:
                return chunks
            nxt = max(e - self.overlap, s + 1)
            while inside_word(nxt) and nxt > s + 1:  # start on a word boundary
                nxt -= 1
            s = nxt

    def _cap(self, chunks: list[Chunk]) -> list[Chunk]:
        """Cut chunks longer than ``max_chars`` (at the last whitespace in the second half, else hard)."""
        if all(len(c.text) <= self.max_chars for c in chunks):
            return chunks
        out = []
        for chunk in chunks:
            text, total = chunk.text, len(chunk.text)
            while text:
                if len(text) <= self.max_chars:
                    cut = len(text)
                else:
                    window = text[self.max_chars // 2:self.max_chars + 1]
                    space = max(window.rfind(c) for c in " \n\t")
                    cut = self.max_chars // 2 + space if space > 0 else self.max_chars
                piece, text = text[:cut].strip(), text[cut:].strip()
                if piece:
                    out.append(Chunk(piece, max(1, round(chunk.tokens * len(piece) / total))))
        return out
