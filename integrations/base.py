"""The narrow backend protocol every index (Qdrant Edge, qdrant-client, FAISS) implements.

Points live in one id space (UUID strings) across backends, so a sparse index and its dense
fallback can answer for the same chunk. Payloads are plain JSON dicts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import CSRAdapterError
from ..sparse import SparseEmbedding


class BackendError(CSRAdapterError):
    """The index cannot be opened, reached or written (unreachable URL, read-only dir, disk full)."""


class CollectionNotFoundError(BackendError):
    """The collection does not exist (opened for reading before any ingest)."""


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


@dataclass
class Point:
    """One indexed chunk: its id, its sparse code and/or dense vector, and its payload."""

    id: str
    payload: dict[str, Any]
    sparse: SparseEmbedding | None = None
    dense: np.ndarray | None = None


@dataclass
class SearchHit:
    """One search result; ``served_by`` says which path produced it (sparse, dense, rerank)."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    served_by: str = "sparse"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "payload": self.payload, "served_by": self.served_by}


@dataclass
class CollectionMeta:
    """What a collection was built with; a mismatch on reuse is refused."""

    model_id: str
    h: int
    k: int
    d: int | None = None  # dense dim, when a dense vector is stored
    idf: bool = False  # sparse IDF modifier on

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "h": self.h, "k": self.k, "d": self.d, "idf": self.idf}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionMeta:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def mismatches(self, other: CollectionMeta) -> list[str]:
        """Human-readable differences (``"model_id abc != def"``); empty when compatible."""
        return [f"{f.name} {getattr(self, f.name)} != {getattr(other, f.name)}"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


@runtime_checkable
class Backend(Protocol):
    """Minimal index interface used by the CLI, the retriever and the benchmarks."""

    name: str

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
