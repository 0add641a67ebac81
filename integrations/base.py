"""The narrow backend protocol every index (Qdrant Edge, qdrant-client, FAISS, Milvus) implements,
and the rules every engine shares (collection names, filters, ``top_k``, meta checks, errors).

Points live in one id space (UUID strings) across backends, so a sparse index and its dense
fallback can answer for the same chunk. Payloads are plain JSON dicts.

Each backend declares what it can do in ``capabilities`` (a frozenset of :data:`CAPABILITIES`);
callers ask :func:`require_capability` instead of probing with ``hasattr``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..defaults import DEFAULT_RRF_K  # noqa: F401  (re-exported: backends take it from here)
from ..errors import CSRAdapterError
from ..filters import check_filter, check_value
from ..sparse import SparseEmbedding


class BackendError(CSRAdapterError):
    """The index cannot be opened, reached or written (unreachable URL, read-only dir, disk full)."""


class CollectionNotFoundError(BackendError):
    """The collection does not exist (opened for reading before any ingest)."""


class UnsupportedError(BackendError):
    """The backend lacks a capability the caller needs (hybrid search on FAISS, dense on a sparse-only store)."""


class InvalidTopKError(CSRAdapterError, ValueError):
    """``top_k`` must be a positive integer."""


# What a backend may declare in ``capabilities`` (the Backend methods every engine has are not listed):
CAPABILITIES: dict[str, str] = {
    "sparse": "search() takes a SparseEmbedding",
    "dense": "search() takes a dense vector",
    "hybrid": "hybrid_search(sparse, dense, top_k, filter, rrf_k) fuses both with RRF",
    "score_ids": "score_ids(dense, ids) -> exact dense scores of stored points",
    "filters": "search(filter={key: value | [values]}) on payload fields",
    "scroll": "scroll(fields) lists every (id, payload), for resumable ingest",
    "optimize": "optimize() after a bulk write",
    "retrieve": "retrieve(ids, with_vectors) -> stored points",
    "hit_vectors": "search(query, top_k, filter, with_vectors=True) puts each hit's stored code on SearchHit.code",
    "batch": "search_batch(queries, top_k, filter) for many queries of the search() kind",
    "lexical": "lexical_search_batch(queries, top_k, filter) on the BM25 lexical vector (engine-side IDF)",
}


def sparse_capabilities(meta: CollectionMeta | None) -> frozenset[str]:
    """What a sparse engine (Qdrant, Milvus) offers for a collection built with ``meta``."""
    base = {"sparse", "filters", "scroll", "optimize", "retrieve", "batch"}
    if meta is not None and meta.lexical:
        base |= {"lexical"}
    return frozenset(base | ({"dense", "hybrid"} if meta is not None and meta.d else set()))


def capabilities_of(backend: Any) -> frozenset[str]:
    """The capabilities ``backend`` declares (none for an object that declares nothing)."""
    return frozenset(getattr(backend, "capabilities", ()))


def require_capability(backend: Any, cap: str, what: str) -> None:
    """Raise a one-line :class:`UnsupportedError` unless ``backend`` declares ``cap`` (``what`` names the use)."""
    if cap not in CAPABILITIES:
        raise ValueError(f"unknown capability {cap!r}: one of {', '.join(CAPABILITIES)}")
    have = capabilities_of(backend)
    if cap not in have:
        name = getattr(backend, "name", type(backend).__name__)
        raise UnsupportedError(f"{what}: the {name} backend does not support {cap!r} "
                               f"(it supports: {', '.join(sorted(have)) or 'nothing optional'})")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (engines raise multi-line messages), or its type name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# Names the store derives from a collection's: ``<store>/<name>.faiss`` (its FAISS fallback), ``<name>.db``
# (a milvus-lite file). A collection named so would share (and ``recreate`` would delete) another's files.
DERIVED_SUFFIXES = {".faiss": "a collection's FAISS fallback", ".db": "a milvus-lite store file"}
TEMPORARY_ROLES = ("next", "old")  # a collection rebuilt beside the live one / the live one being replaced


def temporary_name(name: str, role: str) -> str:
    """The reserved name of ``name``'s rebuild temporary ``role`` (``next`` | ``old``): it starts with ``.``,
    which :func:`check_collection_name` refuses for any other name, so no user collection can be one."""
    assert role in TEMPORARY_ROLES
    return f".csr-{role}.{name}"


def is_temporary_name(name: str) -> bool:
    return any(name.startswith(f".csr-{role}.") and len(name) > len(f".csr-{role}.") for role in TEMPORARY_ROLES)


def check_collection_name(name: str) -> str:
    """``name`` if it is safe as a file or directory name and as a collection name, else a :class:`BackendError`.

    Names starting with ``.`` belong to the store (``.models``, rebuild temporaries: :func:`temporary_name`)
    and names ending in a :data:`DERIVED_SUFFIXES` suffix are paths derived from another collection's:
    both are refused (a temporary name is accepted here, for the code that makes it; user entry points
    refuse it with :func:`check_user_collection_name`)."""
    if (not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\0")
            or len(name) > 200 or not name.isprintable()):
        raise BackendError(f"invalid collection name {name!r}: use letters, digits, '-', '_' or '.'")
    if is_temporary_name(name):
        check_collection_name(name.split(".", 2)[2])
    elif name.startswith("."):
        raise BackendError(f"collection name {name!r} is reserved: names starting with '.' are the store's own "
                           "(its models, rebuild temporaries)")
    for suffix, what in DERIVED_SUFFIXES.items():
        if name.lower().endswith(suffix):
            raise BackendError(f"collection name {name!r} is reserved: a name ending in {suffix!r} is the path of "
                               f"{what}")
    return name


def check_user_collection_name(name: str) -> str:
    """:func:`check_collection_name`, and a rebuild temporary's name is refused too (what users may name)."""
    if isinstance(name, str) and is_temporary_name(name):
        raise BackendError(f"collection name {name!r} is reserved: names starting with '.' are the store's own "
                           "(its models, rebuild temporaries)")
    return check_collection_name(name)


def check_top_k(top_k: int) -> int:
    """``top_k`` as an int if it is a positive integer, else :class:`InvalidTopKError`."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k <= 0:
        raise InvalidTopKError(f"top_k must be a positive integer, got {top_k!r}")
    return int(top_k)


def filter_terms(filter: dict[str, Any] | None) -> list[tuple[str, list[Any]]]:
    """``{key: value | [values]}`` -> ``[(key, values)]``; equality, a list means any of; dotted keys nest.

    A filter outside the grammar of :mod:`csr_adapter.filters` is a one-line ``FilterError`` (``ValueError``)."""
    return [(key, check_value(key, value)) for key, value in (check_filter(filter) or {}).items()]


def make_private_dir(path: str | Path) -> None:
    """Create ``path`` and its missing parents with mode 0o700: a store is readable by its owner only.

    Directories that already exist keep their mode."""
    missing = []
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)


class CollectionMismatchError(BackendError):
    """An existing collection was built with another model or vector configuration."""


def sorted_unique(emb: SparseEmbedding) -> tuple[list[int], list[float]]:
    """A code's indices sorted and unique (duplicates summed) and its values; engines may not check this."""
    idx = np.asarray(emb.indices, dtype=np.int64)
    val = np.asarray(emb.values, dtype=np.float32)
    if len(idx) > 1 and not np.all(np.diff(idx) > 0):
        idx, inverse = np.unique(idx, return_inverse=True)
        val = np.bincount(inverse, weights=val, minlength=len(idx)).astype(np.float32)
    return idx.tolist(), val.tolist()


def dense_query(query: Any, meta: CollectionMeta, where: str) -> list[float]:
    """A dense query vector checked against the collection's dense dim (:class:`UnsupportedError` if it has none)."""
    if not meta.d:
        raise UnsupportedError(f"{where}: collection has no dense vector (ingest with hybrid=True)")
    vec = np.asarray(query, dtype=np.float32).ravel()
    if len(vec) != meta.d:
        raise ValueError(f"dense query has dim {len(vec)}, collection stores {meta.d}")
    return vec.tolist()


def prefetch_limit(top_k: int, factor: int = 4, minimum: int = 50) -> int:
    """Hybrid search: candidates each branch fetches before fusion, ``max(minimum, factor * top_k)``."""
    return max(minimum, factor * top_k)


def check_meta(stored: CollectionMeta, wanted: CollectionMeta | None, where: str) -> CollectionMeta:
    """Return ``stored``; raise a one-line :class:`CollectionMismatchError` if ``wanted`` differs."""
    if wanted is None:
        return stored
    diffs = stored.mismatches(wanted)
    if diffs:
        raise CollectionMismatchError(
            f"{where} was built with another model or vector config ({'; '.join(diffs)}, stored != requested): "
            "use another collection, the same model/k/hybrid/idf, or recreate=True"
        )
    return stored


@dataclass
class Point:
    """One indexed chunk: its id, its sparse code and/or dense vector, and its payload."""

    id: str
    payload: dict[str, Any]
    sparse: SparseEmbedding | None = None
    dense: np.ndarray | None = None
    lexical: SparseEmbedding | None = None  # BM25 term weights (collections with a lexical vector)


@dataclass
class SearchHit:
    """One search result; ``served_by`` says which path produced it (sparse, dense, rerank)."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    served_by: str = "sparse"
    code: SparseEmbedding | None = field(default=None, repr=False)  # the stored code, when asked for (hit_vectors)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "payload": self.payload, "served_by": self.served_by}


@dataclass(frozen=True)
class Layout:
    """The names a collection stores its points under: the sparse vector, the chunk text, the document metadata.

    ``csr`` (the default): vector ``csr``, payload ``text`` and ``meta`` beside csr-adapter's own fields.
    ``langchain``: what langchain-qdrant's ``QdrantVectorStore`` reads with its defaults: vector
    ``langchain-sparse``, payload ``page_content`` and ``metadata`` (the document's metadata plus ``source``,
    ``doc_id`` and ``chunk``), csr-adapter's own fields still beside them; a hybrid collection's dense vector
    keeps its name ``dense`` (langchain-qdrant: ``vector_name="dense", distance=DOT``). Backends store a point in its
    layout and hand every payload back in the ``csr`` form, so nothing above them depends on the layout.
    """

    name: str
    sparse: str
    text: str
    meta: str

    def store(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A payload in csr form as this layout stores it."""
        if self.name == "csr":
            return payload
        out = dict(payload)
        text, meta = out.pop("text", ""), out.pop("meta", None) or {}
        ours = {key: out[key] for key in LINKED if key in out}
        return {self.text: text, self.meta: {**ours, **meta}, **out}

    def load(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A stored payload in csr form (``text``, ``meta``); the inverse of :meth:`store`."""
        if self.name == "csr" or (self.text not in payload and self.meta not in payload):
            return payload
        out = dict(payload)
        text, meta = out.pop(self.text, ""), out.pop(self.meta, None)
        meta = dict(meta) if isinstance(meta, dict) else {}
        for key in LINKED:  # the copies store() added (a document's own value, where it differs, stays)
            if key in meta and key in out and meta[key] == out[key]:
                del meta[key]
        return {"text": text, "meta": meta, **out}

    def field(self, key: str) -> str:
        """A payload key (``text``, ``meta.lang``) as this layout stores it."""
        if self.name == "csr":
            return key
        head, _, rest = key.partition(".")
        head = {"text": self.text, "meta": self.meta}.get(head, head)
        return f"{head}.{rest}" if rest else head


LINKED = ("source", "doc_id", "chunk")  # csr-adapter fields the langchain layout also puts in ``metadata``
LAYOUTS: dict[str, Layout] = {
    "csr": Layout("csr", "csr", "text", "meta"),
    "langchain": Layout("langchain", "langchain-sparse", "page_content", "metadata"),
}


@dataclass
class CollectionMeta:
    """What a collection was built with; a mismatch on reuse is refused."""

    model_id: str
    h: int
    k: int
    d: int | None = None  # dense dim, when a dense vector is stored
    idf: bool = False  # sparse IDF modifier on
    layout: str = "csr"  # a key of LAYOUTS (stored only when not the default)
    lexical: dict[str, Any] | None = None  # BM25 settings of the lexical vector (csr_adapter.lexical.BM25.to_dict)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise BackendError(f"unknown layout {self.layout!r}: one of {', '.join(LAYOUTS)}")
        if self.lexical is not None:
            from ..lexical import BM25, LexicalError

            try:
                self.lexical = BM25.from_dict(self.lexical).to_dict()
            except (LexicalError, TypeError) as exc:
                raise BackendError(f"collection metadata: {exc}") from None

    def bm25(self):
        """The lexical vector's :class:`~csr_adapter.lexical.BM25` (``None``: the collection has none)."""
        from ..lexical import BM25

        return None if self.lexical is None else BM25.from_dict(self.lexical)

    def to_dict(self) -> dict[str, Any]:
        data = {"model_id": self.model_id, "h": self.h, "k": self.k, "d": self.d, "idf": self.idf}
        if self.layout != "csr":
            data["layout"] = self.layout
        if self.lexical is not None:
            data["lexical"] = dict(self.lexical)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionMeta:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def mismatches(self, other: CollectionMeta) -> list[str]:
        """Human-readable differences (``"model_id abc != def"``); empty when compatible. ``other`` without lexical
        settings takes the stored ones (writes through it compute the stored collection's lexical vector)."""
        return [f"{f.name} {getattr(self, f.name)} != {getattr(other, f.name)}"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)
                and not (f.name == "lexical" and other.lexical is None)]


class BackendBase:
    """What engines derive alike from their own members: ``search`` as a batch of one, ``with`` closing."""

    needs_dense = False

    def search(
        self, query: SparseEmbedding | np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None,
        with_payload: bool = True,
    ) -> list[SearchHit]:
        """Top hits for one sparse code (score > 0 only) or dense vector, best first."""
        return self.search_batch([query], top_k, filter, with_payload)[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@runtime_checkable
class Backend(Protocol):
    """Minimal index interface used by the CLI, the retriever and the benchmarks.

    ``capabilities`` says which optional members exist and work (see :data:`CAPABILITIES`);
    ``needs_dense`` says writes need each point's dense vector; ``meta`` is the collection's
    :class:`CollectionMeta` (FAISS: ``None`` until the first write tells it the dimension).
    """

    name: str
    capabilities: frozenset[str]
    needs_dense: bool
    meta: CollectionMeta | None

    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points by id."""

    def search(
        self, query: SparseEmbedding | np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None
    ) -> list[SearchHit]:
        """Top hits (score > 0 for sparse) for one query, best first."""

    def delete(self, ids: Iterable[str]) -> None:
        """Remove points by id (unknown ids are ignored)."""

    def count(self) -> int:
        """Number of points stored."""

    def scroll(self, fields: Sequence[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored ``(id, payload)``, payload cut to ``fields`` (all when None); for resumable ingest."""

    def info(self) -> dict[str, Any]:
        """Engine, location, point count and the collection's :class:`CollectionMeta`."""

    def close(self) -> None:
        """Flush and release files/handles."""
