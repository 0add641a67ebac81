"""Idempotent, resumable ingest: corpus -> token chunks -> CSR codes (+ dense) -> a backend.

Point ids are UUIDv5 of (source, chunk index, content hash), so the same chunk always lands on the
same id. Each run first reads what the index holds (``Backend.scroll``) and then:

- skips documents whose stored chunks are complete and carry the current content hash;
- encodes and upserts only missing chunks (a killed run resumes where it stopped);
- afterwards deletes chunks of changed documents that the new version no longer has, documents gone
  from a re-read file, and, with ``prune``, every point of files gone from the ingested folder.

New points are written before old ones are deleted, so an interruption never loses a document; a
re-run always converges to what one uninterrupted run would have written.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from .corpus import Chunk, Chunker, Corpus, Document, Skip
from .integrations.base import Point, capabilities_of

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "csr-adapter/points")
STATE_FIELDS = ["source", "file", "content_hash", "n_chunks"]


def point_id(source: str, chunk: int, content_hash: str) -> str:
    """Deterministic UUIDv5 of a chunk."""
    return str(uuid.uuid5(NAMESPACE, f"{source}\0{chunk}\0{content_hash}"))


@dataclass
class _Todo:
    id: str
    doc: Document
    index: int
    n_chunks: int
    chunk: Chunk
    content_hash: str

    def payload(self) -> dict[str, Any]:
        return {"text": self.chunk.text, "source": self.doc.source, "file": self.doc.file,
                "doc_id": self.doc.doc_id, "chunk": self.index, "n_chunks": self.n_chunks,
                "content_hash": self.content_hash, "meta": self.doc.meta}


@dataclass
class Plan:
    todo: list[_Todo]
    chunks: int  # chunks the corpus has now
    unchanged: int  # of which already stored
    stale: list[str]  # ids of old versions / removed documents of re-read files
    pruned: list[str]  # ids of files gone from the folder (with prune)
    empty: list[Skip] = field(default_factory=list)


def reason_kind(reason: str) -> str:
    """A skip reason without its specifics (line numbers, sizes, byte offsets, paths)."""
    reason = re.sub(r"^(line|row|item) \d+: ", "", reason)
    reason = re.sub(r"^[\d.]+ MB is over", "over", reason)
    reason = re.sub(r"^same file as .*", "same file as another", reason)
    return reason.split(" (")[0]


@dataclass
class IngestReport:
    """What one ingest did (the CLI summary; ``to_dict`` for ``--json``)."""

    files: int
    documents: int
    chunks: int
    unchanged: int
    written: int
    deleted: int
    pruned: int
    points: int
    skipped: list[Skip]
    seconds: float  # the ingest pipeline: index scan, chunking, encoding, writes
    encode_seconds: float
    upsert_seconds: float
    backend: dict[str, Any] = field(default_factory=dict)
    total_seconds: float = 0.0  # what the caller waited, reading and model load included (set by the CLI)
    adapt: dict[str, Any] | None = None  # what corpus adaptation did (None: the collection's model was reused)

    @property
    def chunks_per_s(self) -> float:
        """Chunks written per second of the ingest pipeline."""
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def skip_reasons(self) -> dict[str, int]:
        """Skips grouped by kind of reason (``{"binary file": 2, "not JSON": 1}``)."""
        return dict(Counter(reason_kind(s.reason) for s in self.skipped).most_common())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["chunks_per_s"] = round(self.chunks_per_s, 2)
        data["skipped"] = [s.to_dict() for s in self.skipped]
        return data


@dataclass
class IndexState:
    """What the index holds: ``points[source] = {id: (content_hash, n_chunks)}``, ``files[source]``."""

    points: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, backend) -> IndexState:
        state = cls()
        for pid, payload in backend.scroll(STATE_FIELDS):
            source = str(payload.get("source", ""))
            state.points.setdefault(source, {})[pid] = (str(payload.get("content_hash", "")),
                                                       int(payload.get("n_chunks", -1)))
            state.files[source] = str(payload.get("file", ""))
        return state


def _complete(stored: dict[str, tuple[str, int]], content_hash: str) -> bool:
    return bool(stored) and all(h == content_hash and n == len(stored) for h, n in stored.values())


def plan(corpus: Corpus, chunker: Chunker, state: IndexState, prune: bool = False, full: bool = False) -> Plan:
    """Decide what to encode and what to delete, from the corpus and the index state.

    ``full``: (re-)encode every chunk, stored or not (a corpus budget depends on the whole corpus)."""
    files = state.files
    todo, stale, empty, chunks, unchanged = [], [], [], 0, 0
    pending: list[tuple[Document, str]] = []
    for doc in corpus.documents:
        content_hash = doc.content_hash(chunker.signature)
        stored = state.points.get(doc.source, {})
        if not full and _complete(stored, content_hash):
            chunks += len(stored)
            unchanged += len(stored)
        else:
            pending.append((doc, content_hash))
    for (doc, content_hash), pieces in zip(pending, chunker.split([d.text for d, _ in pending])):
        if not pieces:
            empty.append(Skip(doc.source, "empty text"))
            continue
        stored = state.points.get(doc.source, {})
        ids = [point_id(doc.source, i, content_hash) for i in range(len(pieces))]
        chunks += len(ids)
        for i, (pid, piece) in enumerate(zip(ids, pieces)):
            if pid in stored:
                unchanged += 1
            if pid not in stored or full:
                todo.append(_Todo(pid, doc, i, len(pieces), piece, content_hash))
        keep = set(ids)
        stale += [pid for pid in stored if pid not in keep]
    # documents that vanished from a file we read again (a JSONL line removed, ...), but not those of a
    # skipped record (its stored version stays), nor any of a file with a record whose id could not be read
    kept = {s.keep for s in corpus.skipped if s.keep}
    current = ({d.source for d in corpus.documents} - {s.path for s in empty}) | kept
    reread = set(corpus.files) - kept
    stale += [pid for src, f in files.items() if f in reread and src not in current for pid in state.points[src]]
    pruned = []
    if prune and corpus.root is not None:
        seen, prefix = set(corpus.seen), corpus.root.rstrip(os.sep) + os.sep
        # a path that could not be read (a folder, or a file in one) is not gone: never prune it or what lies
        # under it; and a file is pruned only when the file system says it is not there (not for a skip)
        unread = {os.path.abspath(s.path).rstrip(os.sep) for s in corpus.skipped if s.reason.startswith("unreadable")}
        blocked = tuple(u + os.sep for u in unread)
        gone = {src for src, f in files.items()
                if f.startswith(prefix) and f not in seen and f not in unread
                and not f.startswith(blocked or ("\0",)) and _absent(f)}
        pruned = [pid for src in sorted(gone) for pid in state.points[src]]
    return Plan(todo, chunks, unchanged, stale, pruned, empty)


def _absent(path: str) -> bool:
    """``path`` is known not to exist (not: it could not be checked, or it is there but was skipped)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def ingest_corpus(
    encoder, backend, corpus: Corpus, *, k: int | None = None, batch_size: int = 32, hybrid: bool = False,
    prune: bool = False, chunker: Chunker | None = None, progress: bool = True, group: int | None = None,
    budget: str = "fixed", k_min: int | None = None, k_max: int | None = None, dense_store=None,
    work: Plan | None = None, lexical=None,
) -> IngestReport:
    """Bring ``backend`` in line with ``corpus``: encode/upsert missing chunks, then delete stale ones.

    Chunks are encoded and written ``group`` at a time (default ``8 * batch_size``): a crash loses at
    most one group of work. ``budget="corpus"``: one cutoff over all chunks gives ``chunks·k`` postings
    (``k`` = the average), so every chunk is re-encoded and re-written on each run. ``dense_store``
    (a :class:`~csr_adapter.dense_store.DenseStore`) reuses and keeps backbone vectors across runs;
    ``work``: a plan already made against this backend. ``lexical`` (a :class:`~csr_adapter.lexical.BM25`):
    each point also gets its BM25 term weights (default: the backend's own, where its collection has them).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    chunker = chunker or Chunker.for_encoder(encoder)
    k = encoder.k if k is None else k
    if work is None:
        work = plan(corpus, chunker, IndexState.read(backend), prune, full=budget == "corpus")
    work.todo.sort(key=lambda t: (-t.chunk.tokens, t.id))  # length-sorted batches pad less
    prefix = encoder.config.document_prefix
    group = group or 8 * batch_size
    meta = getattr(backend, "meta", None)
    if lexical is None and meta is not None and getattr(meta, "lexical", None):
        lexical = meta.bm25()
    t_encode = t_upsert = 0.0
    pooled = None
    if budget != "fixed":
        from .budget import encode_corpus

        t0 = time.perf_counter()
        pooled = encode_corpus(encoder, [t.chunk.text for t in work.todo], k, batch_size, prefix, budget,
                               k_min, k_max, progress)
        t_encode += time.perf_counter() - t0
    bar = tqdm(total=len(work.todo), desc="ingest", unit="chunk", disable=not progress or not work.todo,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for lo in range(0, len(work.todo), group):
            part = work.todo[lo:lo + group]
            t0 = time.perf_counter()
            if pooled is not None:
                dense, codes = pooled[0][lo:lo + group], pooled[1][lo:lo + group]
            else:
                texts = [t.chunk.text for t in part]
                dense = (dense_store.encode(texts, batch_size=batch_size) if dense_store is not None
                         else encoder.encode_dense(texts, batch_size=batch_size, prefix=prefix))
                codes = encoder.sparsify(dense, k)
            t1 = time.perf_counter()
            terms = lexical.documents([t.chunk.text for t in part]) if lexical is not None else [None] * len(part)
            backend.upsert([Point(t.id, t.payload(), codes[i], dense[i] if hybrid else None, terms[i])
                            for i, t in enumerate(part)])
            t_encode += t1 - t0
            t_upsert += time.perf_counter() - t1
            bar.update(len(part))
    finally:
        bar.close()
    t0 = time.perf_counter()
    if work.stale or work.pruned:
        backend.delete(work.stale + work.pruned)
    if (work.todo or work.stale or work.pruned) and "optimize" in capabilities_of(backend):
        backend.optimize()
    t_upsert += time.perf_counter() - t0
    return IngestReport(
        files=len(corpus.files), documents=len(corpus.documents), chunks=work.chunks, unchanged=work.unchanged,
        written=len(work.todo), deleted=len(work.stale), pruned=len(work.pruned), points=backend.count(),
        skipped=corpus.skipped + work.empty, seconds=time.perf_counter() - start, encode_seconds=t_encode,
        upsert_seconds=t_upsert, backend=backend.info(),
    )
