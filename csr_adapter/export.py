"""Copy a collection between engines: embedded Qdrant Edge -> a Qdrant server, a server -> the embedded store
(backups), or server -> server, with its points (sparse codes, dense vectors, payloads), metadata and model.

    from csr_adapter import open_collection
    from csr_adapter.export import export_collection

    report = export_collection(open_collection("docs"), open_collection("docs", url="http://qdrant:6333"))

The target is created with the source's :class:`~csr_adapter.integrations.base.CollectionMeta` (a target built
with another model or config is refused before anything is written) and the source's model directory is stored
where the target's side looks for it (``<--path>/.models`` for an embedded store given with ``--path``, else
``$CSR_ADAPTER_HOME/models``), so the target answers ``search`` with no ``--model``.

Point ids are kept (ingest's deterministic UUIDs). Each run compares every source point with the target's point
of the same id (payload and vectors) and writes only the missing or different ones, so an export is idempotent
and a killed one resumes: any re-run ends with exactly the source's points. Target points that the source does
not have are reported, and deleted only with ``prune``. The source is only read.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .collection import Collection
from .errors import CSRAdapterError

BATCH = 256  # points read, compared and written per round trip


@dataclass
class ExportReport:
    """What one export did (the CLI summary; ``to_dict`` for ``--json``)."""

    source: dict[str, Any]  # the source backend's info (engine, location, points, meta)
    target: dict[str, Any]  # the target backend's info after the export
    points: int  # points the source holds
    written: int  # points written to the target (missing or different there)
    unchanged: int  # points the target already held as they are in the source
    extra: int  # target points the source does not have (kept unless prune)
    pruned: int  # of which deleted (prune)
    model_dir: str | None  # where the target's side finds the model (None: the shipped default)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _model_root(col: Collection) -> str | None:
    """The ``path`` argument of :mod:`csr_adapter.model_store` for ``col`` (its store, or None: the home)."""
    return col.path if col.embedded else None


def source_model(col: Collection, model_id: str, model: str | None = None) -> Path | None:
    """The directory of ``col``'s model ``model_id`` (``model``: a directory given by the user, checked against
    the id); ``None`` when it is the shipped default; :class:`ModelNotFoundError` when it is not stored here."""
    from .encoder import CSREncoder
    from .model_store import ModelNotFoundError, find_model, model_roots

    if model is not None:
        given = CSREncoder.from_pretrained(model, device="cpu").model_id
        if given != model_id:
            raise ModelNotFoundError(f"model=DIR {model} has model id {given}, but collection {col.name!r} was "
                                     f"built with {model_id}: give that model's directory")
        return Path(model)
    where = find_model(model_id, _model_root(col))
    if where is not None:
        return where
    if CSREncoder.from_pretrained(device="cpu").model_id == model_id:
        return None
    looked = ", ".join(str(r) for r in model_roots(_model_root(col)))
    raise ModelNotFoundError(f"collection {col.name!r} was built with model {model_id}, which is not stored locally "
                             f"(looked in {looked}): pass model=DIR")


def _same(a, b) -> bool:
    """Two :class:`~csr_adapter.integrations.base.Point` s are equal: payload, sparse code, lexical and dense vector."""
    if a.payload != b.payload:
        return False
    for x, y in ((a.sparse, b.sparse), (a.dense, b.dense), (a.lexical, b.lexical)):
        if (x is None) != (y is None):
            return False
    for x, y in ((a.sparse, b.sparse), (a.lexical, b.lexical)):
        if x is not None and not (np.array_equal(x.indices, y.indices) and np.array_equal(
                np.asarray(x.values, np.float32), np.asarray(y.values, np.float32))):
            return False
    return a.dense is None or np.array_equal(np.asarray(a.dense, np.float32), np.asarray(b.dense, np.float32))


def _pages(backend, size: int) -> Iterator[list[str]]:
    """Every point id of ``backend``, ``size`` at a time."""
    page: list[str] = []
    for pid, _ in backend.scroll([]):
        page.append(pid)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def export_collection(source: Collection, target: Collection, *, model: str | None = None, recreate: bool = False,
                      prune: bool = False, batch_size: int = BATCH, progress: bool = True) -> ExportReport:
    """Copy ``source`` (an existing collection) into ``target`` (created with the source's metadata when missing).

    ``model``: the source's model directory when it is not stored locally; ``recreate``: drop the target
    first; ``prune``: delete target points the source does not have. See the module docstring.
    """
    from tqdm.auto import tqdm

    from .integrations.base import capabilities_of, require_capability
    from .model_store import copy_model, model_roots

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if source.kind != target.kind:
        raise CSRAdapterError(f"export copies between Qdrant engines: source backend={source.kind!r}, target "
                              f"backend={target.kind!r}")
    start = time.perf_counter()
    src = source.open_backend()  # create=False: a missing collection is a one-line error, nothing created
    try:
        for cap in ("scroll", "retrieve"):
            require_capability(src, cap, "export")
        meta = src.meta
        model_dir = source_model(source, meta.model_id, model)  # before the target is touched
        src_info, total = src.info(), src.count()
        dst = target.open_backend(meta=meta, recreate=recreate)  # refuses another model/config
        try:
            stored = None if model_dir is None else copy_model(model_dir, meta.model_id,
                                                               model_roots(_model_root(target))[0])
            have = {pid for pid, _ in dst.scroll([])}
            seen: set[str] = set()
            written = unchanged = 0
            bar = tqdm(total=total, desc="export", unit="point", disable=not progress or not total,
                       file=sys.stderr, dynamic_ncols=True)
            try:
                for ids in _pages(src, batch_size):
                    seen.update(ids)
                    points = src.retrieve(ids, with_vectors=True)
                    there = {p.id: p for p in dst.retrieve([i for i in ids if i in have], with_vectors=True)}
                    todo = [p for p in points if p.id not in there or not _same(p, there[p.id])]
                    if todo:
                        dst.upsert(todo)
                    written += len(todo)
                    unchanged += len(points) - len(todo)
                    bar.update(len(ids))
            finally:
                bar.close()
            extra = sorted(have - seen)
            if prune and extra:
                dst.delete(extra)
            if (written or (prune and extra)) and "optimize" in capabilities_of(dst):
                dst.optimize()
            dst_info = dst.info()
        finally:
            dst.close()
    finally:
        src.close()
    return ExportReport(source=src_info, target=dst_info, points=len(seen), written=written, unchanged=unchanged,
                        extra=len(extra), pruned=len(extra) if prune else 0,
                        model_dir=None if stored is None else str(stored), seconds=time.perf_counter() - start)
