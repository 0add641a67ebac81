"""A FAISS collection's index lifecycle: built from the store, loaded, kept fresh, written atomically.

``index.faiss`` holds any ``index_factory`` spec (default ``Flat``) under ``IndexIDMap2`` (IVF specs keep
ids natively); ``index.faiss.gen`` the store generation it was written at. The index is derived data:
when its file is missing, corrupt, or older than the store (a crash between commit and save), it is
rebuilt from the stored vectors with a warning. Index types that cannot remove ids (HNSW), and untrained
ones (IVF, PQ), are marked stale and rebuilt once, at the next search or flush.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from csr_adapter.errors import require
from csr_adapter.integrations.faiss_store import STORE_FILE, FaissIndexError, PointStore

INDEX_FILE = "index.faiss"
DEFAULT_BLAS_THRESHOLD = 16  # batched flat search uses BLAS from 16 queries (faiss default here: 128000)
ADD_BATCH = 8192


def _faiss():
    return require("faiss", "faiss")


def _inner(index):
    """The index doing the search under ID maps and pre-transforms (an ``IndexIVF`` if there is one)."""
    faiss = _faiss()
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        pass
    while hasattr(index, "index"):
        index = faiss.downcast_index(index.index)
    return index


class FaissIndex:
    """The FAISS index over ``store``'s vectors (``current``: the loaded index, or None before first use).

    ``dim`` answers the collection's dimension (None until the first write tells it); ``spec`` is the
    ``index_factory`` string; ``path=None`` never writes a file.
    """

    def __init__(self, store: PointStore, path: Path | None, spec: str, dim: Callable[[], int | None],
                 threads: int | None = None, blas_threshold: int | None = DEFAULT_BLAS_THRESHOLD) -> None:
        self.store, self.path, self.spec, self.dim = store, path, spec, dim
        self.threads, self.blas_threshold = threads, blas_threshold
        self.lock: threading.RLock = store.lock
        self.current = None
        self.stale = False  # must be rebuilt from the store before the next search
        self.dirty = False  # changed since the file was written

    @staticmethod
    def remove_files(path: Path) -> None:
        for name in (INDEX_FILE, INDEX_FILE + ".gen"):
            (path / name).unlink(missing_ok=True)

    def new(self):
        """IVF indexes keep ids natively (``IndexIDMap`` over IVF renumbers wrongly on remove);
        everything else is wrapped in ``IndexIDMap2``."""
        faiss = _faiss()
        spec = self.spec
        if spec.upper().startswith("IDMAP"):
            spec = spec.split(",", 1)[-1]
        try:
            index = faiss.index_factory(self.dim(), spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise FaissIndexError(f"bad index_factory {self.spec!r}: {str(exc).splitlines()[0]}") from None
        return index if isinstance(_inner(index), faiss.IndexIVF) else faiss.IndexIDMap2(index)

    def _tune(self, index):
        """Search-time defaults faiss leaves low: IVF ``nprobe`` 1 -> nlist/16 (>= 8)."""
        faiss = _faiss()
        inner = _inner(index)
        if isinstance(inner, faiss.IndexIVF) and inner.nprobe == 1:
            inner.nprobe = min(inner.nlist, max(8, inner.nlist // 16))
        return index

    def load(self, fresh: bool = True):
        """The FAISS index, loaded (or rebuilt from the store) on first use.

        ``fresh=False`` (writes) returns a stale index as is: it is rebuilt once, on the next search or flush.
        """
        with self.lock:
            if self.current is not None and (not self.stale or not fresh):
                return self.current
            if self.current is not None:  # stale: untrained, or after a delete the index type cannot do
                return self.rebuild()
            if self.dim() is None:
                return None  # nothing ingested yet
            n = self.store.count()
            file = self.path / INDEX_FILE if self.path is not None else None
            if file is None or not file.exists():
                if n:
                    warnings.warn(f"{file} missing: rebuilding it from {STORE_FILE} ({n} vectors)", stacklevel=3)
                    return self.rebuild()
                self.current = self._tune(self.new())
                return self.current
            try:
                index = _faiss().read_index(str(file))
            except RuntimeError:
                warnings.warn(f"{file} is corrupt: rebuilding it from {STORE_FILE} ({n} vectors)", stacklevel=3)
                return self.rebuild()
            gen_file = file.with_name(INDEX_FILE + ".gen")
            gen = gen_file.read_text().strip() if gen_file.exists() else ""
            if index.d != self.dim() or index.ntotal != n or gen != str(self.store.generation()):
                warnings.warn(
                    f"{file} is out of date with {STORE_FILE} (index {index.ntotal} vectors of dim {index.d}, "
                    f"store {n} of dim {self.dim()}): rebuilding it from the store", stacklevel=3,
                )
                return self.rebuild()
            self.current = self._tune(index)
            return index

    def rebuild(self):
        """Recreate the FAISS index from the vectors in the store (training it first if needed)."""
        with self.lock:
            index = self.new()
            n = self.store.count()
            if not index.is_trained and n:
                train = np.stack([v for _, v in self.store.iter_vectors()])
                try:
                    index.train(train)
                except RuntimeError as exc:
                    raise FaissIndexError(
                        f"cannot train index {self.spec!r} on {n} vectors "
                        f"({str(exc).splitlines()[0][:200]}); use 'Flat' for small collections"
                    ) from None
            if index.is_trained:
                batch_ids, batch_vecs = [], []
                for iid, vec in self.store.iter_vectors():
                    batch_ids.append(iid)
                    batch_vecs.append(vec)
                    if len(batch_ids) == ADD_BATCH:
                        index.add_with_ids(np.stack(batch_vecs), np.asarray(batch_ids, dtype=np.int64))
                        batch_ids, batch_vecs = [], []
                if batch_ids:
                    index.add_with_ids(np.stack(batch_vecs), np.asarray(batch_ids, dtype=np.int64))
            self.current, self.stale, self.dirty = self._tune(index), False, True
            self.flush()
            return index

    def flush(self) -> None:
        """Write the index file (atomically) if it changed since the last write."""
        with self.lock:
            if self.current is not None and self.stale:
                self.rebuild()  # writes the file
                return
            if not self.dirty or self.current is None or self.path is None:
                return
            file = self.path / INDEX_FILE
            tmp = file.with_name(INDEX_FILE + ".tmp")
            _faiss().write_index(self.current, str(tmp))
            os.replace(tmp, file)
            file.with_name(INDEX_FILE + ".gen").write_text(str(self.store.generation()))
            self.dirty = False

    # -- changes -----------------------------------------------------------------------------------
    def add(self, index, x: np.ndarray, iids: list[int]) -> None:
        """Add rows to ``index`` (as loaded before the write); an index that cannot take them goes stale."""
        if index is not None and index.is_trained and not self.stale:
            try:
                index.add_with_ids(x, np.asarray(iids, dtype=np.int64))
            except RuntimeError:  # the store has the points: rebuild the index from it on next use
                self.stale = True
        else:  # untrained (IVF, PQ): trained on all stored vectors at the next search or flush
            self.stale = True
        self.dirty = True

    def remove(self, iids: list[int]) -> None:
        if not iids or self.current is None or self.stale:
            return
        try:
            self.current.remove_ids(np.asarray(iids, dtype=np.int64))
        except RuntimeError:  # e.g. HNSW: rebuild from the store on next use
            self.stale = True
        self.dirty = True

    # -- search ------------------------------------------------------------------------------------
    def _configure(self, nq: int) -> None:
        faiss = _faiss()
        if self.blas_threshold is not None:
            faiss.cvar.distance_compute_blas_threshold = self.blas_threshold
        from csr_adapter.runtime import available_cores

        # one query: 1 thread (2 threads were 7x slower on a 2-core box); batches: all cores
        faiss.omp_set_num_threads(1 if nq == 1 else (self.threads or available_cores()))

    def _params(self, index, allowed: np.ndarray | None):
        if allowed is None:
            return None
        faiss = _faiss()
        inner = _inner(index)
        selector = faiss.IDSelectorBatch(allowed)
        if isinstance(inner, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=selector, nprobe=max(inner.nprobe, min(inner.nlist, 64)))
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(inner.hnsw.efSearch, 64))
        return faiss.SearchParameters(sel=selector)

    def search(self, index, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and iids of the ``k`` best rows for each query (iid -1: none), among ``allowed`` if given."""
        self._configure(len(q))
        return index.search(q, k, params=self._params(index, allowed))
