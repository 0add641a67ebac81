"""Sparse embedding types: one row (:class:`SparseEmbedding`) and a batch (:class:`SparseEmbeddings`).

A batch is stored CSR-style: ``indptr`` (int64, ``n + 1``), ``indices`` (int32, sorted and unique
within each row) and ``values`` (float32, no zeros), over ``dim`` latents. Rows are L2-normalised by
default, so the dot product of two rows is their cosine similarity (what Qdrant's sparse search uses).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class SparseEmbedding:
    """One sparse vector: sorted unique int32 ``indices`` and float32 ``values`` (no zeros)."""

    indices: np.ndarray
    values: np.ndarray
    dim: int

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.values))

    def to_dict(self) -> dict[str, list]:
        """``{"indices": [...], "values": [...]}`` as Qdrant's ``SparseVector`` takes it."""
        return {"indices": self.indices.tolist(), "values": self.values.tolist()}

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.dim, dtype=np.float32)
        out[self.indices] = self.values
        return out

    def dot(self, other: SparseEmbedding) -> float:
        common, ia, ib = np.intersect1d(self.indices, other.indices, assume_unique=True, return_indices=True)
        return float(np.dot(self.values[ia], other.values[ib])) if len(common) else 0.0


class SparseEmbeddings(Sequence):
    """A batch of variable-length sparse rows over ``dim`` latents (CSR layout)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, dim: int) -> None:
        self.indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(indices, dtype=np.int32)
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.dim = int(dim)
        if self.indptr.ndim != 1 or len(self.indptr) < 1 or self.indptr[0] != 0:
            raise ValueError("indptr must be 1-d and start at 0")
        if self.indptr[-1] != len(self.indices) or len(self.indices) != len(self.values):
            raise ValueError("indptr, indices and values disagree in length")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= self.dim):
            raise ValueError(f"indices must lie in [0, {self.dim})")

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def empty(cls, dim: int) -> SparseEmbeddings:
        return cls(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), dim)

    @classmethod
    def from_dense(cls, dense: np.ndarray, normalize: bool = True) -> SparseEmbeddings:
        """Build from a dense ``(n, dim)`` array, dropping zeros (and normalising rows)."""
        dense = np.asarray(dense, dtype=np.float32)
        if dense.ndim != 2:
            raise ValueError(f"expected a 2-d array, got shape {dense.shape}")
        return cls.from_scipy(sp.csr_matrix(dense), normalize=normalize)

    @classmethod
    def from_scipy(cls, matrix: sp.spmatrix, normalize: bool = True) -> SparseEmbeddings:
        """Build from any SciPy sparse matrix (rows = embeddings)."""
        m = sp.csr_matrix(matrix, dtype=np.float32)
        m.sum_duplicates()
        m.eliminate_zeros()
        m.sort_indices()
        out = cls(m.indptr, m.indices, m.data, m.shape[1])
        return out.normalized() if normalize else out

    @classmethod
    def from_topk(
        cls, values: np.ndarray, indices: np.ndarray, dim: int, keep: np.ndarray | None = None,
        normalize: bool = True,
    ) -> SparseEmbeddings:
        """Build from per-row candidates ``(n, m)`` (e.g. a top-k: indices unique within a row).

        Keeps the entries where ``keep`` (default: all) and the value is positive, sorted by index.
        """
        values = np.asarray(values, dtype=np.float32)
        indices = np.asarray(indices, dtype=np.int64)
        keep = values > 0 if keep is None else keep & (values > 0)
        order = np.argsort(np.where(keep, indices, dim), axis=1, kind="stable")
        indices, values, keep = (np.take_along_axis(a, order, axis=1) for a in (indices, values, keep))
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
        out = cls(indptr, indices[keep], values[keep], dim)
        return out.normalized() if normalize else out

    @classmethod
    def from_rows(cls, rows: Sequence[SparseEmbedding | dict], dim: int, normalize: bool = False) -> SparseEmbeddings:
        """Build from :class:`SparseEmbedding` rows or ``{"indices", "values"}`` dicts."""
        ind, val, ptr = [], [], [0]
        for row in rows:
            i = np.asarray(row["indices"] if isinstance(row, dict) else row.indices, dtype=np.int64)
            v = np.asarray(row["values"] if isinstance(row, dict) else row.values, dtype=np.float32)
            ind.append(i)
            val.append(v)
            ptr.append(ptr[-1] + len(i))
        n = len(ptr) - 1
        indices = np.concatenate(ind) if ind else np.zeros(0, np.int64)
        values = np.concatenate(val) if val else np.zeros(0, np.float32)
        if len(indices) and (indices.min() < 0 or indices.max() >= dim):
            raise ValueError(f"indices must lie in [0, {dim})")
        matrix = sp.csr_matrix((values, indices, np.asarray(ptr)), shape=(n, dim))
        return cls.from_scipy(matrix, normalize=normalize)

    @classmethod
    def concat(cls, parts: Sequence[SparseEmbeddings]) -> SparseEmbeddings:
        if not parts:
            raise ValueError("nothing to concatenate")
        dims = {p.dim for p in parts}
        if len(dims) != 1:
            raise ValueError(f"cannot concatenate batches of different dims {sorted(dims)}")
        return cls.from_scipy(sp.vstack([p.to_scipy() for p in parts], format="csr"), normalize=False)

    # -- sequence protocol -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, item):
        if isinstance(item, (slice, list, np.ndarray)):
            rows = range(len(self))[item] if isinstance(item, slice) else np.asarray(item)
            return SparseEmbeddings.from_scipy(self.to_scipy()[np.asarray(rows, dtype=np.int64)], normalize=False)
        i = int(item)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {item} out of range for {len(self)} rows")
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return SparseEmbedding(self.indices[lo:hi], self.values[lo:hi], self.dim)

    def __iter__(self) -> Iterator[SparseEmbedding]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"SparseEmbeddings(n={len(self)}, dim={self.dim}, mean_nnz={self.mean_nnz:.2f})"

    # -- statistics ----------------------------------------------------------------------------
    @property
    def nnz(self) -> np.ndarray:
        """Non-zeros per row, shape ``(n,)``."""
        return np.diff(self.indptr)

    @property
    def mean_nnz(self) -> float:
        return float(self.nnz.mean()) if len(self) else 0.0

    # -- conversions ----------------------------------------------------------------------------
    def to_scipy(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), self.dim))

    def to_dense(self) -> np.ndarray:
        return self.to_scipy().toarray()

    def to_torch(self):
        """A ``torch.sparse_csr_tensor`` of shape ``(n, dim)``."""
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(
                torch.from_numpy(self.indptr), torch.from_numpy(self.indices.astype(np.int64)),
                torch.from_numpy(self.values), size=(len(self), self.dim),
            )

    def to_list(self) -> list[dict[str, list]]:
        """One ``{"indices", "values"}`` dict per row, e.g. for Qdrant ``SparseVector(**row)``."""
        return [row.to_dict() for row in self]

    def to_dict(self) -> dict:
        return {"dim": self.dim, "rows": self.to_list()}

    @classmethod
    def from_dict(cls, data: dict) -> SparseEmbeddings:
        return cls.from_rows(data["rows"], int(data["dim"]), normalize=False)

    # -- algebra -------------------------------------------------------------------------------
    def normalized(self) -> SparseEmbeddings:
        """Rows scaled to unit L2 norm (empty rows stay empty)."""
        rows = np.repeat(np.arange(len(self)), self.nnz)
        sq = np.bincount(rows, weights=self.values.astype(np.float64) ** 2, minlength=len(self))
        norms = np.where(sq > 0, np.sqrt(sq), 1.0)
        scale = np.repeat(1.0 / norms, self.nnz)
        return SparseEmbeddings(self.indptr, self.indices, (self.values * scale).astype(np.float32), self.dim)

    def dot(self, other: SparseEmbeddings) -> np.ndarray:
        """Dense ``(len(self), len(other))`` matrix of dot products."""
        if other.dim != self.dim:
            raise ValueError(f"dim mismatch: {self.dim} vs {other.dim}")
        return np.asarray((self.to_scipy() @ other.to_scipy().T).toarray(), dtype=np.float32)

    def cosine(self, other: SparseEmbeddings) -> np.ndarray:
        return self.normalized().dot(other.normalized())
