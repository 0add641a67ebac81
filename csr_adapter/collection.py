"""One ``Collection`` API over every engine: ingest (with corpus adaptation), search, count, info.

A collection owns its model. When ``ingest`` creates a collection it adapts a CSR head to the corpus's
own chunks (see :mod:`csr_adapter.training.adapt`), stores that model with the collection
(:mod:`csr_adapter.model_store`) and records its id in the collection's metadata, so ``search``, ``serve``
and the framework classes pick it up with no flags::

    from csr_adapter import open_collection

    with open_collection("docs") as col:                  # embedded Qdrant Edge under ./.csr-adapter
        col.ingest("corpus/")                              # adapts, stores the model, indexes
        for hit in col.search("what is a sparse code?", top_k=5):
            print(hit.score, hit.payload["source"])

Re-ingest encodes new and changed chunks with the stored head (old codes stay comparable);
``ingest(..., adapt=True)`` on an existing embedded collection retrains on the current corpus and
rebuilds the index beside the old one from cached dense vectors, then switches (search answers from
the old codes until the new ones are complete).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CSRAdapterError

# Below this many chunks ingest keeps the given model. Adaptation measured to pay from 82 documents up
# (ADI, and 100-document sub-corpora in benchmarks/results/zeroshot.md); smaller corpora were not measured.
MIN_ADAPT_CHUNKS = 64
FIT_SAMPLE = 2000        # points sampled by ``fit_report``
READY = "csr-adapter.ready"  # marker written into a rebuilt collection once it is complete
RETIRED = "csr-adapter.retired"  # marker written into a live collection (or fallback) just before it is replaced


class AdaptError(CSRAdapterError):
    """Adaptation settings or state that cannot work (one-line message)."""


def _echo_default(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


class Collection:
    """A named collection on one engine, with its model, fallback and ingest/search rules."""

    def __init__(self, name: str = "csr", *, backend: str = "qdrant", path: str | os.PathLike | None = None,
                 url: str | None = None, api_key: str | None = None, model: str | os.PathLike | None = None,
                 device: str = "auto", threads: int | None = None, runtime: str | None = None,
                 echo: Callable[[str], None] | None = None, share=None, client: Any = None,
                 encoder=None) -> None:
        from .integrations.base import check_user_collection_name

        self.name = check_user_collection_name(name)
        self.kind, self.url, self.api_key = backend, url, api_key
        self.path = None if path is None else str(path)
        if self.path is not None:
            self.url = None  # an explicit path wins over QDRANT_URL from the environment
        self.model, self.device, self.threads = model, device, threads
        self.runtime = runtime  # the backbone's runtime (torch | onnx | onnx-int8; None: share's, else torch)
        self.echo = echo or _echo_default
        self.share = share  # an encoder whose backbone the collection's model may reuse
        self.client = client  # a qdrant_client.QdrantClient to use instead of url (e.g. ":memory:" in tests)
        self.fixed = encoder  # a loaded model to use as is (checked against the collection, like --model)
        self._encoder = encoder
        self._finish_switch()

    # -- locations ------------------------------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        return self.kind == "qdrant" and self.client is None and not (
            self.url or (self.path is None and os.environ.get("QDRANT_URL")))

    def _location(self, name: str | None = None) -> Path:
        from .integrations.qdrant import default_path

        name = name or self.name
        return Path(self.path) / name if self.path is not None else default_path(name)

    def _temporary(self, role: str) -> str:
        """The reserved name of this collection's rebuild temporary (``next`` | ``old``): no user name is one."""
        from .integrations.base import temporary_name

        return temporary_name(self.name, role)

    def _finish_switch(self) -> None:
        """Complete a rebuild-and-switch that a killed run left half done (embedded store only)."""
        if not self.embedded:
            return
        live, nxt = self._location(), self._location(self._temporary("next"))
        old = self._location(self._temporary("old"))
        if (nxt / READY).exists() and not live.exists():
            nxt.replace(live)
        if live.exists():
            _remove_retired(old)
            (live / RETIRED).unlink(missing_ok=True)  # marked, then the run was killed before the switch

    # -- backend and model ----------------------------------------------------------------------------
    def open_backend(self, name: str | None = None, **options: Any):
        """The raw engine backend (``create=False`` unless ``meta`` is given)."""
        from .integrations.registry import open_backend

        options.setdefault("create", options.get("meta") is not None)
        if self.client is not None:
            options["client"] = self.client
        return open_backend(self.kind, name or self.name, path=self.path, url=self.url, api_key=self.api_key,
                            threads=self.threads, **options)

    def meta(self):
        """The stored :class:`CollectionMeta`, or ``None`` when the collection does not exist yet."""
        from .integrations.base import CollectionNotFoundError

        try:
            be = self.open_backend()
        except CollectionNotFoundError:
            return None
        try:
            return be.meta
        finally:
            be.close()

    @property
    def encoder(self):
        """The collection's model (``--model`` if given, else the one its metadata names)."""
        if self._encoder is None:
            self._encoder = self._model_for(self.meta())
        return self._encoder

    def _model_for(self, meta):
        """Load the model for stored ``meta``: ``--model``/the default for a new collection, else its own."""
        if self.model is not None or meta is None:
            from .encoder import CSREncoder

            return CSREncoder.from_pretrained(self.model, device=self.device, runtime=self.runtime)
        from .model_store import load_collection_model

        return load_collection_model(meta.model_id, self.path, self.name, self.device, self.share,
                                     runtime=self.runtime)

    def check_model(self, enc, meta) -> None:
        from .integrations.base import CollectionMismatchError

        if meta is not None and meta.model_id and enc.model_id != meta.model_id:
            raise CollectionMismatchError(
                f"collection {self.name!r} was built with another model or vector config (model_id {meta.model_id} "
                f"!= {enc.model_id}, stored != requested): pass the same --model (or none: the collection's own), "
                "or --recreate")

    # -- ingest ---------------------------------------------------------------------------------------
    def ingest(self, corpus, *, k: int | None = None, adapt: bool | None = None, recreate: bool = False,
               prune: bool = False, hybrid: bool = False, idf: bool = False, with_fallback: bool = False,
               batch_size: int = 32, overlap: int | None = None, budget: str = "fixed", avg_k: int | None = None,
               k_min: int | None = None, k_max: int | None = None, adapt_config=None, progress: bool = True,
               layout: str | None = None, lexical: bool = True):
        """Bring the collection in line with ``corpus`` (a path or a :class:`~csr_adapter.corpus.Corpus`).

        ``adapt``: ``None`` adapts a new collection when the corpus has at least ``MIN_ADAPT_CHUNKS``
        chunks, ``True`` always (and rebuilds an existing one), ``False`` never. ``layout``: the names points
        are stored under (:data:`~csr_adapter.integrations.base.LAYOUTS`; ``"langchain"``: what langchain-qdrant
        reads, server collections only); ``None``: the existing collection's, else ``"csr"``. ``lexical``: a new
        Qdrant collection also stores each chunk's BM25 term weights (:mod:`csr_adapter.lexical`), which search
        fuses with the codes; an existing collection keeps what it has (``adapt=True`` rebuilds it with them).
        """
        from .corpus import Corpus, read_corpus

        if not isinstance(corpus, Corpus):
            corpus = read_corpus(corpus)
        meta = None if recreate else self.meta()
        layout = self.check_layout(layout or (meta.layout if meta is not None else "csr"))
        if self.kind == "faiss" or (budget != "fixed" and adapt is None):
            adapt = False  # a dense-only collection has no head; budget modes need a pooled-trained model
        if meta is not None and adapt:
            return self._rebuild(corpus, meta, k=k, hybrid=hybrid, idf=idf, with_fallback=with_fallback,
                                 batch_size=batch_size, overlap=overlap, adapt_config=adapt_config,
                                 prune=prune, progress=progress, lexical=lexical)
        if meta is not None:
            if self._encoder is None:
                self._encoder = self._model_for(meta)  # the meta just read: no second open of the engine
            enc = self._encoder
            self.check_model(enc, meta)
            k = meta.k if k is None and budget == "fixed" else k
            return self._write(enc, corpus, k=k, recreate=False, prune=prune, hybrid=hybrid, idf=idf,
                               with_fallback=with_fallback, batch_size=batch_size, overlap=overlap, budget=budget,
                               avg_k=avg_k, k_min=k_min, k_max=k_max, progress=progress, layout=layout,
                               lexical=meta.lexical)
        from .encoder import CSREncoder

        base = self.fixed or CSREncoder.from_pretrained(self.model, device=self.device, runtime=self.runtime)
        enc, adapted = base, None
        if adapt is not False:
            enc, adapted = self._adapt(base, corpus, k=k, overlap=overlap, batch_size=batch_size,
                                       config=adapt_config, force=bool(adapt), progress=progress)
        report = self._write(enc, corpus, k=k, recreate=recreate, prune=prune, hybrid=hybrid, idf=idf,
                             with_fallback=with_fallback, batch_size=batch_size, overlap=overlap, budget=budget,
                             avg_k=avg_k, k_min=k_min, k_max=k_max, progress=progress, layout=layout,
                             lexical=lexical)
        report.adapt = adapted
        return report

    def check_layout(self, layout: str) -> str:
        """``layout`` if this collection can be stored in it (the langchain layout: server collections only)."""
        from .integrations.base import LAYOUTS, UnsupportedError

        if layout not in LAYOUTS:
            raise UnsupportedError(f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}")
        if layout != "csr" and (self.kind != "qdrant" or self.embedded):
            raise UnsupportedError(f"layout={layout!r} is for Qdrant server collections (url=URL): langchain-qdrant "
                                   "opens a server or qdrant-client's own store, not the embedded Qdrant Edge store")
        return layout

    def _adapt(self, base, corpus, *, k, overlap, batch_size, config, force, progress):
        """Adapt to ``corpus`` and store the model with the collection; ``(encoder, summary)``."""
        from .model_store import save_model

        enc, summary = adapt_to_corpus(base, corpus, k=k, overlap=overlap, batch_size=batch_size, config=config,
                                       force=force, progress=progress, echo=self.echo)
        if enc is base:
            return base, summary
        where = save_model(enc, self.path if self.embedded else None)
        self.echo(f"adapt: fitted a head to {summary['sampled']} chunks in {summary['seconds']:.1f} s "
                  f"(reconstruction error {summary['recon_before']:.3f} -> {summary['recon_after']:.3f}); "
                  f"model {where}")
        self._encoder = enc
        return enc, {**summary, "model_dir": str(where)}

    def _write(self, enc, corpus, *, k, recreate, prune, hybrid, idf, with_fallback, batch_size, overlap, budget,
               avg_k, k_min, k_max, progress, name: str | None = None, layout: str = "csr", lexical=False,
               carry=()):
        """Write ``corpus`` with ``enc`` (and ``carry``: stored points re-coded from their text). ``lexical``: an
        existing collection's settings (a dict, or ``None``), or for a new one ``True`` (BM25 fitted to the corpus's
        chunks, Qdrant only) / ``False``."""
        from .budget import ingest_k
        from .corpus import Chunker
        from .defaults import check_k
        from .dense_store import DenseStore
        from .ingest import IndexState, ingest_corpus, plan
        from .integrations.base import CollectionMeta

        k = check_k(enc.k if k is None else k, enc.h)
        chunker = Chunker.for_encoder(enc, overlap)
        k = ingest_k(enc, budget, k, avg_k, k_min, k_max)
        work = None
        if lexical is True and self.kind == "qdrant":  # a new collection: BM25's average length from its chunks
            from .lexical import BM25

            work = plan(corpus, chunker, IndexState(), prune, full=budget == "corpus")
            lexical = BM25.fit([t.chunk.text for t in work.todo]).to_dict()
        lexical = lexical if isinstance(lexical, dict) else None
        meta = CollectionMeta(enc.model_id, enc.h, k, d=enc.d if hybrid else None, idf=idf, layout=layout,
                              lexical=lexical)
        if not recreate and self.kind != "faiss" and self._has_fallback(name):
            with_fallback = True  # every write and delete reaches every index of the collection
        be = self.open_backend(name, meta=meta, recreate=recreate)
        if recreate and not with_fallback and self.kind != "faiss":
            try:
                self._drop_fallback(name)  # its points were the recreated collection's: they must not answer
            except BaseException:
                be.close()
                raise
        if with_fallback:
            from .integrations.fallback import with_fallback as attach

            be = attach(be, name or self.name, self.path, meta=meta, recreate=recreate, threads=self.threads)
        try:
            with DenseStore(enc, enc.config.document_prefix) as store:
                if carry:
                    _write_carried(enc, be, carry, k, hybrid or be.needs_dense, store, batch_size)
                report = ingest_corpus(enc, be, corpus, k=k, batch_size=batch_size,
                                       hybrid=hybrid or be.needs_dense, prune=prune,
                                       chunker=chunker, progress=progress, budget=budget, k_min=k_min,
                                       k_max=k_max, dense_store=store, work=work)
        finally:
            be.close()
        self._encoder = enc
        return report

    def _rebuild(self, corpus, meta, *, k, hybrid, idf, with_fallback, batch_size, overlap, adapt_config, prune,
                 progress, lexical: bool = True):
        """``ingest --adapt`` on an existing collection: adapt, build beside, switch.

        Every stored point stays unless this corpus's ingest would delete it (an old version of a document
        re-read now, a file pruned): points of other folders are re-coded from their stored text with the new
        head and carried over under the same id and payload."""
        from .encoder import CSREncoder

        if not self.embedded:
            raise AdaptError(f"collection {self.name!r} is on a server: re-adapting in place is not supported; "
                             "ingest into a new collection with adapt=True, or recreate=True, adapt=True")
        base = self.fixed or CSREncoder.from_pretrained(self.model, device=self.device, runtime=self.runtime)
        drop, carry = self._carried(base, corpus, overlap, prune)
        enc, adapted = self._adapt(base, _with_texts(corpus, carry), k=k or meta.k, overlap=overlap,
                                   batch_size=batch_size, config=adapt_config, force=True, progress=progress)
        nxt = self._temporary("next")
        had_fallback = with_fallback or self._has_fallback()
        report = self._write(enc, corpus, k=k or meta.k, recreate=True, prune=prune, hybrid=hybrid or bool(meta.d),
                             idf=idf or meta.idf, with_fallback=had_fallback, batch_size=batch_size,
                             overlap=overlap, budget="fixed", avg_k=None, k_min=None, k_max=None,
                             progress=progress, name=nxt, lexical=lexical or bool(meta.lexical), carry=carry)
        self._switch(had_fallback)
        report.deleted, report.pruned = len(drop.stale), len(drop.pruned)  # of the live collection
        report.written += len(carry)
        report.adapt = {**adapted, "carried": len(carry)}
        report.backend["path"] = str(self._location())
        return report

    def _carried(self, enc, corpus, overlap, prune):
        """What a rebuild for ``corpus`` keeps of the live collection: ``(plan, [(id, payload)])``, the plan an
        ingest of ``corpus`` would make against it (its stale and pruned ids are dropped) and every other
        stored point whose document ``corpus`` does not hold (written again from its stored text)."""
        from .corpus import Chunker
        from .ingest import IndexState, plan

        be = self.open_backend()
        try:
            drop = plan(corpus, Chunker.for_encoder(enc, overlap), IndexState.read(be), prune)
            gone = set(drop.stale) | set(drop.pruned)
            ours = {doc.source for doc in corpus.documents}
            carry = [(pid, payload) for pid, payload in be.scroll()
                     if pid not in gone and str(payload.get("source", "")) not in ours]
        finally:
            be.close()
        textless = sum(not isinstance(p.get("text"), str) or not p["text"].strip() for _, p in carry)
        if textless:
            raise AdaptError(f"collection {self.name!r}: {textless} stored point(s) from outside this corpus have no "
                             "text to re-code with a new head; re-adapting would drop them (ingest their folder "
                             "into a new collection, or use --recreate)")
        return drop, carry

    def _has_fallback(self, name: str | None = None) -> bool:
        from .integrations.faiss import STORE_FILE
        from .integrations.fallback import fallback_path

        return (fallback_path(name or self.name, self.path) / STORE_FILE).exists()

    def _drop_fallback(self, name: str | None = None) -> None:
        """Delete the FAISS fallback of ``name`` (default: this collection), if it has one."""
        from .integrations.fallback import fallback_path

        if self._has_fallback(name):
            shutil.rmtree(fallback_path(name or self.name, self.path))

    def _switch(self, fallback: bool) -> None:
        from .integrations.fallback import fallback_path

        nxt_name, old_name = self._temporary("next"), self._temporary("old")
        live, nxt, old = self._location(), self._location(nxt_name), self._location(old_name)
        (nxt / READY).write_text("complete\n", encoding="utf-8")
        if fallback:
            f_live, f_nxt = fallback_path(self.name, self.path), fallback_path(nxt_name, self.path)
            f_old = fallback_path(old_name, self.path)
            _remove_retired(f_old)
            if f_live.exists():
                _retire(f_live, f_old)
            f_nxt.replace(f_live)
            _remove_retired(f_old)
        _remove_retired(old)
        _retire(live, old)
        nxt.replace(live)
        (live / READY).unlink()
        _remove_retired(old)

    # -- search ---------------------------------------------------------------------------------------
    def searcher(self, fallback: bool = True, *, mode: str | None = None, per_document: bool = False,
                 k: int | None = None, **options: Any):
        """A :class:`~csr_adapter.retrieval.Searcher` over this collection (close it). ``mode``: see
        :data:`~csr_adapter.retrieval.MODES` (default ``fused`` where the collection has a lexical vector);
        ``k``: query code latents (default the collection's; the model's ``query_k`` widens it)."""
        from .defaults import check_k
        from .integrations.fallback import open_fallback
        from .retrieval import Searcher

        be = self.open_backend()  # once: the model comes from the metadata this handle read
        try:
            if self._encoder is None:
                self._encoder = self._model_for(be.meta)
            enc = self._encoder
            self.check_model(enc, be.meta)
            k = check_k(be.meta.k if k is None else k, enc.h)
            if "sparse" not in be.capabilities:  # dense-only (--backend faiss): the backbone vector answers
                return Searcher(enc, None, be, k=k, mode=mode, per_document=per_document, **options)
            dense = open_fallback(self.name, self.path, self.threads) if fallback and mode != "hybrid" else None
            return Searcher(enc, be, dense, k=k, mode=mode, per_document=per_document, **options)
        except BaseException:
            be.close()
            raise

    def search(self, query: str, top_k: int = 5, filter: dict[str, Any] | None = None, fallback: bool = True,
               mode: str | None = None, per_document: bool = False):
        """Top hits for one query (:class:`~csr_adapter.retrieval.Searcher`)."""
        return self.search_batch([query], top_k, filter, fallback, mode, per_document)[0]

    def search_batch(self, queries: Sequence[str], top_k: int = 5, filter: dict[str, Any] | None = None,
                     fallback: bool = True, mode: str | None = None, per_document: bool = False):
        """Top hits per query (one list per query, input order); a filter outside the grammar of
        :mod:`csr_adapter.filters` is a one-line ``FilterError`` (a ``ValueError``); a relative ``source``/``file``
        value also matches its absolute path under the working directory, as the CLI's ``--filter``."""
        from .filters import check_filter
        from .integrations.base import check_top_k

        top_k, filter = check_top_k(top_k), check_filter(filter)  # before the model and the engine are opened
        with self.searcher(fallback, mode=mode, per_document=per_document) as searcher:
            return [a.hits for a in searcher.search_batch(queries, top_k, filter)]

    # -- inspection -----------------------------------------------------------------------------------
    def count(self) -> int:
        be = self.open_backend()
        try:
            return be.count()
        finally:
            be.close()

    def fit_report(self, sample: int = FIT_SAMPLE, seed: int = 0) -> dict[str, Any]:
        """How well the collection's head fits what it holds now: reconstruction error and dead latents at
        its k on a sample of stored chunks (dense vectors from the cache, or encoded)."""
        from .dense_store import DenseStore
        from .training.adapt import fit_stats

        enc = self.encoder  # before opening: the embedded engine admits one open handle at a time
        be = self.open_backend()
        try:
            k = be.meta.k
            texts = [str(p.get("text", "")) for _, p in be.scroll(["text"])]
        finally:
            be.close()
        texts = [t for t in texts if t.strip()]
        if not texts:
            return {"rows": 0}
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(texts), size=min(sample, len(texts)), replace=False)
        with DenseStore(enc, enc.config.document_prefix) as store:
            dense = store.encode([texts[i] for i in pick])
        stats = fit_stats(enc.head, dense, k)
        adapted = (enc.config.training or {}).get("adapt_report")
        if adapted:
            stats["recon_nmse_at_adaptation"] = adapted.get("recon_after")
        return {"k": k, **stats}

    def close(self) -> None:
        self._encoder = self.fixed

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _with_texts(corpus, carry):
    """``corpus`` plus the stored texts of ``carry`` as documents: what a rebuilt collection will hold, to adapt
    its head to."""
    from dataclasses import replace

    from .corpus import Document

    if not carry:
        return corpus
    extra = [Document(f"{pid}#carried", "", payload["text"], pid) for pid, payload in carry]
    return replace(corpus, documents=corpus.documents + extra)


def _write_carried(enc, be, carry, k, dense: bool, store, batch_size: int, group: int = 256) -> None:
    """Re-code ``carry``'s ``(id, payload)`` from their stored text and upsert them as they were."""
    from .integrations.base import Point

    bm25 = getattr(getattr(be, "meta", None), "bm25", lambda: None)()
    for lo in range(0, len(carry), group):
        part = carry[lo:lo + group]
        texts = [p["text"] for _, p in part]
        vectors = store.encode(texts, batch_size=batch_size)
        codes = enc.sparsify(vectors, k)
        terms = bm25.documents(texts) if bm25 is not None else [None] * len(part)
        be.upsert([Point(pid, payload, codes[i], vectors[i] if dense else None, terms[i])
                   for i, (pid, payload) in enumerate(part)])


def _retire(live: Path, old: Path) -> None:
    """Move ``live`` to ``old``, marked first as ours to delete (see :func:`_remove_retired`)."""
    if old.exists() or old.is_symlink():
        raise AdaptError(f"{old}: in the way of the switch and not made by csr-adapter (no {RETIRED}); "
                         "move it away and re-run")
    (live / RETIRED).write_text("replaced by a rebuild; csr-adapter deletes this folder\n", encoding="utf-8")
    live.replace(old)


def _remove_retired(old: Path) -> None:
    """Delete ``old`` only if this code retired it (its marker is there); anything else there is left alone."""
    if (old / RETIRED).is_file() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)


def corpus_chunks(enc, corpus, overlap: int | None = None) -> tuple[list[str], np.ndarray]:
    """Every chunk text of ``corpus`` (as ingest cuts it) and the index of its document."""
    from .corpus import Chunker

    chunker = Chunker.for_encoder(enc, overlap)
    texts, groups = [], []
    for d, pieces in enumerate(chunker.split([doc.text for doc in corpus.documents])):
        for piece in pieces:
            texts.append(piece.text)
            groups.append(d)
    return texts, np.asarray(groups, dtype=np.int64)


def adapt_to_corpus(base, corpus, *, k: int | None = None, overlap: int | None = None, batch_size: int = 32,
                    config=None, force: bool = False, progress: bool = True,
                    echo: Callable[[str], None] | None = None):
    """Fit ``base``'s head to the chunks of ``corpus`` (text only); ``(encoder, summary)``.

    Chunk vectors go through the persistent :class:`~csr_adapter.dense_store.DenseStore`, so a re-run
    (after a kill, or ``ingest`` after ``eval --adapt``) does not run the backbone again. Below
    ``MIN_ADAPT_CHUNKS`` chunks ``base`` is returned unless ``force``.
    """
    from .dense_store import DenseStore

    echo = echo or _echo_default
    texts, groups = corpus_chunks(base, corpus, overlap)
    if len(texts) < MIN_ADAPT_CHUNKS and not force:
        echo(f"adapt: {len(texts)} chunks is below {MIN_ADAPT_CHUNKS}, where adaptation stops paying: "
             f"keeping the given model (force it with --adapt)")
        return base, {"adapted": False, "chunks": len(texts), "reason": "corpus too small"}
    if len(texts) < 2:
        raise AdaptError(f"cannot adapt on {len(texts)} chunk(s): use adapt=False")
    from .training.adapt import AdaptConfig, pseudo_queries

    cfg = config or AdaptConfig()
    import time

    t0 = time.perf_counter()
    with DenseStore(base, base.config.document_prefix) as store:
        dense = store.encode(texts, batch_size=batch_size, progress=progress, desc="embed")
    embed_s = time.perf_counter() - t0
    queries, rows = None, None
    if cfg.pseudo_queries > 0:
        snippets, rows = pseudo_queries(texts, cfg.pseudo_queries, cfg.seed)
        with DenseStore(base, base.config.query_prefix) as store:
            queries = store.encode(snippets, batch_size=batch_size, progress=progress, desc="pseudo-queries")
    enc = base.adapt(dense=dense, groups=groups, k=k, config=cfg, progress=progress, queries=queries,
                     query_rows=rows)
    rep = enc.config.training["adapt_report"]
    return enc, {"adapted": True, "chunks": len(texts), "model_id": enc.model_id, "embed_seconds": embed_s, **rep}


def open_collection(name: str = "csr", **options: Any) -> Collection:
    """Open (or name, for a first ingest) a collection; options as :class:`Collection`."""
    return Collection(name, **options)
