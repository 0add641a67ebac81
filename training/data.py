"""Training data sources and the per-epoch batch plan.

A :class:`Source` is a list of texts plus the structure the losses need:

* ``groups``: sets of text indices sharing one label (supervised contrastive). A BEIR query and all its
  relevant documents form one group; in a labelled file each class is one group.
* ``pairs``: units of two or more *different* views of one thing (InfoNCE); two distinct members are
  drawn per use. A pairs JSONL line is a unit; in a raw corpus, a document's chunks are a unit.
* ``fill``: unlabelled texts (reconstruction, and in-batch negatives), e.g. the whole BEIR corpus.

Layouts: a BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/train.tsv); a pairs JSONL
(``{"query", "positive"}``); a labelled JSONL (``{"text", "label"}``); a raw corpus (a folder of
.txt/.md files, or a JSONL of ``{"text"}`` objects or strings).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CSRAdapterError
from .beir import BeirData, is_beir_dir, load_beir, read_jsonl

KINDS = ("auto", "beir", "pairs", "labelled", "raw")
RAW_SUFFIXES = (".txt", ".md", ".text")


class DataError(CSRAdapterError):
    """Training data that cannot be used (unknown layout, empty, missing labels, unknown ids)."""


@dataclass
class Source:
    """Texts of one data source plus its label/pair structure (indices into ``texts``)."""

    name: str
    segments: list[list[str]]                       # texts, in blocks embedded (and cached) separately
    groups: list[list[int]] = field(default_factory=list)
    pairs: list[list[int]] = field(default_factory=list)
    fill: list[int] = field(default_factory=list)
    description: str = ""

    @property
    def texts(self) -> list[str]:
        return [t for seg in self.segments for t in seg]

    def __len__(self) -> int:
        return sum(len(s) for s in self.segments)

    def memberships(self) -> list[list[int]]:
        """For each text, the ids of the groups (labels) it belongs to."""
        out: list[list[int]] = [[] for _ in range(len(self))]
        for g, members in enumerate(self.groups):
            for i in members:
                out[i].append(g)
        return out

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.name.encode())
        for text in self.texts:
            digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(json.dumps([self.groups, self.pairs, self.fill]).encode())
        return digest.hexdigest()[:16]


# -- loaders ----------------------------------------------------------------------------------------
def beir_source(folder: str | Path, split: str = "train", holdout_frac: float = 0.0,
                seed: int = 0) -> tuple[Source, BeirData | None]:
    """BEIR folder: corpus docs (fill) + queries grouped with their relevant docs (grade > 0).

    ``holdout_frac`` of the judged queries (seeded) are kept out of training and returned as a
    :class:`BeirData` for model selection.
    """
    data = load_beir(folder, split=split)
    qids = [q for q in data.qrels if any(g > 0 for g in data.qrels[q].values())]
    if not qids:
        raise DataError(f"{folder}: qrels/{split}.tsv has no relevant (grade > 0) pairs")
    held: BeirData | None = None
    if holdout_frac > 0:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(qids))
        n_hold = max(1, int(round(holdout_frac * len(qids))))
        hold = {qids[i] for i in order[:n_hold]}
        held = BeirData(data.corpus, {q: data.queries[q] for q in qids if q in hold},
                        {q: data.qrels[q] for q in qids if q in hold})
        qids = [q for q in qids if q not in hold]
    doc_ids = list(data.corpus)
    doc_index = {d: i for i, d in enumerate(doc_ids)}
    queries = [data.queries[q] for q in qids]
    groups = [[len(doc_ids) + j] + [doc_index[d] for d, g in data.qrels[q].items() if g > 0]
              for j, q in enumerate(qids)]
    src = Source(f"beir:{Path(folder).name}", [[data.doc_text(d) for d in doc_ids], queries],
                 groups=groups, fill=list(range(len(doc_ids))),
                 description=f"{Path(folder).name} corpus ({len(doc_ids)} docs) + {split} qrels "
                             f"({len(qids)} queries)")
    return src, held


def _rows(path: Path) -> list:
    try:
        rows = read_jsonl(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not rows:
        raise DataError(f"{path}: empty dataset (no rows)")
    return rows


def pairs_source(path: str | Path) -> Source:
    """JSONL of ``{"query": str, "positive": str}``: each line is one InfoNCE unit."""
    path = Path(path)
    index: dict[str, int] = {}
    units = []
    for n, row in enumerate(_rows(path), 1):
        if not isinstance(row, dict) or not isinstance(row.get("query"), str) \
                or not isinstance(row.get("positive"), str):
            raise DataError(f"{path}:{n}: a pairs file needs string 'query' and 'positive' fields")
        q, p = row["query"].strip(), row["positive"].strip()
        if not q or not p:
            raise DataError(f"{path}:{n}: empty query or positive")
        if q == p:
            continue  # identical views teach nothing but repulsion
        units.append([index.setdefault(q, len(index)), index.setdefault(p, len(index))])
    if not units:
        raise DataError(f"{path}: no usable (query, positive) pairs")
    return Source(f"pairs:{path.name}", [list(index)], pairs=units,
                  description=f"{path.name} ({len(units)} pairs)")


def labelled_source(path: str | Path) -> Source:
    """JSONL of ``{"text": str, "label": str|int}``: each class is one supervised-contrastive group."""
    path = Path(path)
    texts, labels = [], []
    for n, row in enumerate(_rows(path), 1):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError(f"{path}:{n}: a labelled file needs a string 'text' field")
        if row.get("label") is None or isinstance(row["label"], (list, dict)) or str(row["label"]) == "":
            raise DataError(f"{path}:{n}: label missing (every row of a labelled file needs 'label')")
        if row["text"].strip():
            texts.append(row["text"])
            labels.append(str(row["label"]))
    if not texts:
        raise DataError(f"{path}: empty dataset (no non-empty texts)")
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    groups = [m for m in by_label.values() if len(m) > 1]
    fill = [m[0] for m in by_label.values() if len(m) == 1]
    return Source(f"labelled:{path.name}", [texts], groups=groups, fill=fill,
                  description=f"{path.name} ({len(texts)} texts, {len(by_label)} labels)")


def chunk_text(text: str, chunk_words: int = 64, min_words: int = 12) -> list[str]:
    """Split a document into consecutive word windows (sentence-aligned where possible).

    Returns at least two *different* chunks when the text has ``2 * min_words`` words or more,
    otherwise the whole text as one chunk.
    """
    words = text.split()
    if len(words) < 2 * min_words:
        return [" ".join(words)] if words else []
    n = max(2, -(-len(words) // chunk_words))
    sentences = [s.split() for s in re.split(r"(?<=[.!?])\s+", " ".join(words)) if s.strip()]
    target = len(words) / n
    chunks, cur = [], []
    for sent in sentences:
        cur.extend(sent)
        if len(cur) >= target and len(chunks) < n - 1:
            chunks.append(cur)
            cur = []
    if cur:
        chunks.append(cur)
    if len(chunks) < 2 or min(len(c) for c in chunks) < min_words:  # sentence split failed: even windows
        size = -(-len(words) // n)
        chunks = [words[i:i + size] for i in range(0, len(words), size)]
        if len(chunks[-1]) < min_words and len(chunks) > 2:
            chunks[-2].extend(chunks.pop())
    return [" ".join(c) for c in chunks]


def raw_source(path: str | Path, chunk_words: int = 64) -> Source:
    """Raw corpus (folder of text files, or JSONL of texts): chunks of one document are positives."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RAW_SUFFIXES)
        docs = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    else:
        docs = []
        for n, row in enumerate(_rows(path), 1):
            text = row if isinstance(row, str) else row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise DataError(f"{path}:{n}: a raw corpus JSONL needs a string or a 'text' field")
            docs.append(text)
    texts: list[str] = []
    pairs, fill = [], []
    for doc in docs:
        chunks = list(dict.fromkeys(chunk_text(doc, chunk_words)))  # distinct views only
        start = len(texts)
        texts.extend(chunks)
        if len(chunks) >= 2:
            pairs.append(list(range(start, start + len(chunks))))
        else:
            fill.extend(range(start, start + len(chunks)))
    if not texts:
        raise DataError(f"{path}: empty dataset (no non-empty texts)")
    return Source(f"raw:{path.name}", [texts], pairs=pairs, fill=fill,
                  description=f"{path.name} raw corpus ({len(docs)} docs, {len(texts)} chunks, "
                              f"{len(pairs)} self-supervised units)")


def detect_kind(path: str | Path) -> str:
    """``beir``, ``pairs``, ``labelled`` or ``raw`` from the layout; :class:`DataError` otherwise."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        if is_beir_dir(path):
            return "beir"
        if any(p.suffix.lower() in RAW_SUFFIXES for p in path.rglob("*") if p.is_file()):
            return "raw"
        raise DataError(f"{path}: unknown data layout (not a BEIR folder, no .txt/.md files)")
    if not path.name.endswith((".jsonl", ".jsonl.gz", ".json")):
        raise DataError(f"{path}: unknown data layout (expected a folder or a .jsonl[.gz] file)")
    rows = _rows(path)
    first = rows[0]
    if isinstance(first, dict) and {"query", "positive"} <= set(first):
        return "pairs"
    if any(isinstance(r, dict) and "label" in r for r in rows):
        return "labelled"
    if isinstance(first, str) or (isinstance(first, dict) and "text" in first):
        return "raw"
    raise DataError(f"{path}: unknown data layout (rows have keys {sorted(first)[:5]})"
                    if isinstance(first, dict) else f"{path}: unknown data layout")


def load_source(path: str | Path, kind: str = "auto", holdout_frac: float = 0.0,
                seed: int = 0) -> tuple[Source, BeirData | None]:
    """Load one source (layout auto-detected unless ``kind`` says); BEIR may also yield a held-out split."""
    if kind not in KINDS:
        raise DataError(f"unknown data kind {kind!r}: use one of {', '.join(KINDS)}")
    kind = detect_kind(path) if kind == "auto" else kind
    if kind == "beir":
        return beir_source(path, "train", holdout_frac, seed)
    if kind == "pairs":
        return pairs_source(path), None
    if kind == "labelled":
        return labelled_source(path), None
    return raw_source(path), None


# -- batch plan -------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Items of one source: ``items`` text indices; InfoNCE pairs are ``items[:n_pairs]`` vs
    ``items[n_pairs:2*n_pairs]``; ``positives`` is the supervised-contrastive mask (or None)."""

    source: int
    items: np.ndarray
    positives: np.ndarray | None = None
    n_pairs: int = 0


def _positives(items: list[int], member: list[list[int]]) -> np.ndarray:
    labels = sorted({g for i in items for g in member[i]})
    if not labels:
        return np.zeros((len(items), len(items)), dtype=bool)
    col = {g: j for j, g in enumerate(labels)}
    inc = np.zeros((len(items), len(labels)), dtype=np.float32)
    for r, i in enumerate(items):
        for g in member[i]:
            inc[r, col[g]] = 1.0
    return (inc @ inc.T) > 0


def plan_epoch(sources: list[Source], batch_size: int, rng: np.random.Generator, fill_frac: float = 0.5,
               group_size: int = 4) -> list[Batch]:
    """All batches of one epoch, shuffled across sources. Every fill text and every labelled unit is
    seen at least once; the shorter stream of a source cycles to match the longer one."""
    batches: list[Batch] = []
    for s, src in enumerate(sources):
        member = src.memberships() if src.groups else []
        fill = list(rng.permutation(src.fill)) if src.fill else []
        has_structure = bool(src.groups or src.pairs)
        budget = batch_size if not fill else (batch_size - int(round(batch_size * fill_frac))
                                              if has_structure else 0)
        fill_budget = batch_size - budget
        units: list[list[int]] = []
        if src.groups:
            for g in src.groups:
                m = list(rng.permutation(g))
                chunks = [m[i:i + group_size] for i in range(0, len(m), group_size)]
                if len(chunks) > 1 and len(chunks[-1]) == 1:
                    chunks[-2].extend(chunks.pop())
                units.extend(chunks)
        elif src.pairs:
            units = [list(u) if len(u) == 2 else list(rng.choice(u, size=2, replace=False)) for u in src.pairs]
        units = [units[i] for i in rng.permutation(len(units))]
        unit_batches: list[list[list[int]]] = []
        if units and budget > 0:
            cur, used = [], 0
            per = 2 if src.pairs and not src.groups else None
            for u in units:
                size = per or len(u)
                if cur and used + size > budget:
                    unit_batches.append(cur)
                    cur, used = [], 0
                cur.append(u)
                used += size
            if cur:
                unit_batches.append(cur)
        n_fill_batches = -(-len(fill) // fill_budget) if fill and fill_budget > 0 else 0
        n = max(len(unit_batches), n_fill_batches)
        for b in range(n):
            chosen = unit_batches[b % len(unit_batches)] if unit_batches else []
            if src.pairs and not src.groups:
                items = [u[0] for u in chosen] + [u[1] for u in chosen]
                n_pairs = len(chosen)
            else:
                items = [i for u in chosen for i in u]
                n_pairs = 0
            if fill:
                items += [fill[(b * fill_budget + j) % len(fill)] for j in range(fill_budget)]
            head, tail = items[:2 * n_pairs], list(dict.fromkeys(items[2 * n_pairs:]))
            seen = set(head)
            items = head + [i for i in tail if i not in seen]
            pos = _positives(items, member) if src.groups else None
            batches.append(Batch(s, np.asarray(items, dtype=np.int64), pos, n_pairs))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def as_pairs(src: Source) -> Source:
    """CSR-style view of a grouped source: every (first member, other member) of a group is an InfoNCE pair
    (a BEIR query and each relevant doc); fill is kept. Used for the CSR baseline (no SupCon)."""
    pairs = [[g[0], i] for g in src.groups for i in g[1:]]
    return Source(src.name + "+pairs", src.segments, pairs=pairs, fill=list(src.fill),
                  description=src.description + " as (query, doc) pairs")


def unlabelled(src: Source) -> Source:
    """The same texts with no labels or pairs (reconstruction only)."""
    return Source(src.name + "+unlabelled", src.segments, fill=list(range(len(src))),
                  description=src.description + " (texts only, labels unused)")
