"""`csr-adapter ingest` (folder/file/stdin -> index) and `csr-adapter search` (query -> ranked chunks)."""

from __future__ import annotations

import json
import os
import time

import click

from ..defaults import DEFAULT_RRF_K
from ..filters import FilterError, parse_filter_args
from .options import (
    Float,
    Int,
    device_option,
    json_option,
    model_option,
    qdrant_key_options,
    runtime_option,
    server_client,
    threads_option,
)
from .safe import printable


def backend_options(fn):
    """--backend, --collection, --path, --url, --qdrant-api-key (shared by ingest and search)."""
    for option in reversed([
        click.option("--backend", default="qdrant", show_default=True,
                     help="Index backend: qdrant (embedded Qdrant Edge, or a server with --url), milvus "
                          "(milvus-lite, or a server with MILVUS_URI), or faiss (dense-only, ./.csr-adapter/faiss)."),
        click.option("--collection", default="csr", show_default=True, help="Collection name."),
        click.option("--path", "store", type=click.Path(file_okay=False), default=None,
                     help="Embedded storage root; the collection lives in DIR/<collection>. "
                          "Default: ./.csr-adapter/qdrant"),
        click.option("--url", envvar="QDRANT_URL", default=None,
                     help="Qdrant server URL instead of the embedded engine (env QDRANT_URL)."),
    ]):
        fn = option(fn)
    return qdrant_key_options(fn)


def _show(path: str, file: str | None = None) -> str:
    """A stored path (or ``file#id`` source, given its ``file``), relative to the working directory when under it."""
    base = file if file and path.startswith(file) else path
    shown = base
    if os.path.isabs(base):
        rel = os.path.relpath(base)
        shown = rel if not rel.startswith("..") else base
    return shown + path[len(base):]


@click.command()
@click.argument("path", type=click.Path(allow_dash=True))
@backend_options
@model_option
@click.option("--k", type=Int(), default=None, help="Active latents per code (default: the model's k).")
@click.option("--batch-size", type=Int(min=1), default=32, show_default=True,
              help="Texts per encoder batch.")
@click.option("--recreate", is_flag=True, help="Delete the collection first (needed to change model or config).")
@click.option("--prune", is_flag=True, help="Delete points of files no longer in PATH.")
@click.option("--hybrid", is_flag=True, help="Also store the dense backbone vector (for search --hybrid).")
@click.option("--idf", is_flag=True, help="Create the sparse vector with Qdrant's IDF modifier (off by default).")
@click.option("--with-fallback", is_flag=True,
              help="Also write the dense vectors to a FAISS fallback index (same point ids) that search uses "
                   "when sparse comes back short.")
@click.option("--text-field", default="text", show_default=True,
              help="Text field of .json/.jsonl records and text column of .csv files.")
@click.option("--max-file-mb", type=Float(min=0, min_open=True), default=64.0, show_default=True,
              help="Skip files larger than this.")
@click.option("--follow-links", is_flag=True, help="Also read symlinks that point out of PATH (skipped by default).")
@click.option("--overlap", type=Int(), default=None, help="Tokens shared by neighbouring chunks (default 1/8 window).")
@click.option("--budget", type=click.Choice(["fixed", "corpus"]), default="fixed", show_default=True,
              help="corpus: one cutoff over all chunks, exactly chunks x avg-k postings (variable k per chunk; "
                   "every chunk is re-encoded on each run).")
@click.option("--avg-k", type=Int(), default=None, help="Corpus budget: average active dims per chunk (default --k).")
@click.option("--k-min", type=Int(), default=None, help="Corpus budget: fewest active dims per chunk.")
@click.option("--k-max", type=Int(), default=None, help="Corpus budget: most active dims per chunk.")
@click.option("--adapt", "adapt", flag_value=True, default=None,
              help="Adapt the head to this corpus even when small, and re-adapt an existing collection "
                   "(rebuilt beside it from cached vectors, then switched).")
@click.option("--no-adapt", is_flag=True, help="Keep --model (or the shipped default) as it is.")
@click.option("--no-lexical", is_flag=True,
              help="A new collection without the BM25 lexical vector that search fuses with the codes.")
@click.option("--adapt-steps", type=Int(min=1), default=None,
              help="Most optimiser steps of the adaptation (bounds its time; default 1100).")
@click.option("--layout", type=click.Choice(["csr", "langchain"]), default=None,
              help="Names points are stored under. langchain: payload page_content/metadata and sparse vector "
                   "'langchain-sparse', what langchain-qdrant's QdrantVectorStore reads (server collections, --url). "
                   "Default: the collection's, else csr.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@device_option
@runtime_option
@threads_option
@json_option
def ingest(path: str, backend: str, collection: str, store: str | None, url: str | None, api_key: str | None,
           model: str | None, k: int | None, batch_size: int, recreate: bool, prune: bool, hybrid: bool,
           idf: bool, with_fallback: bool, text_field: str, max_file_mb: float, follow_links: bool,
           overlap: int | None, budget: str, avg_k: int | None, k_min: int | None, k_max: int | None,
           adapt: bool | None, no_adapt: bool, no_lexical: bool, adapt_steps: int | None, layout: str | None,
           no_progress: bool, device: str, runtime: str, threads: int, as_json: bool) -> None:
    """Encode PATH (folder, file, or - for JSONL on stdin) into a collection; re-runs add only what changed.

    A new collection gets a CSR head adapted to PATH's own chunks (stored with the collection and used by
    search with no flags); --no-adapt keeps --model as it is; --adapt re-adapts an existing collection.
    """
    from ..collection import Collection
    from ..corpus import ReaderOptions, read_corpus
    from ..runtime import set_threads

    if adapt is not None and no_adapt:
        raise click.UsageError("--adapt and --no-adapt are exclusive")
    start = time.perf_counter()
    col = Collection(collection, backend=backend, path=store, url=url, api_key=api_key, model=model, device=device,
                     runtime=runtime, threads=threads or None, client=server_client(url),
                     echo=(lambda m: None) if as_json else (lambda m: click.echo(printable(m), err=True)))
    if layout is not None:
        col.check_layout(layout)  # before the corpus is read
    corpus = read_corpus(path, ReaderOptions(text_field=text_field, max_bytes=int(max_file_mb * 1e6),
                                             follow_links=follow_links))
    set_threads(threads)
    try:
        report = col.ingest(corpus, k=k, adapt=False if no_adapt else adapt, recreate=recreate, prune=prune,
                            hybrid=hybrid, idf=idf, with_fallback=with_fallback, batch_size=batch_size,
                            overlap=overlap, budget=budget, avg_k=avg_k, k_min=k_min, k_max=k_max,
                            adapt_config=adapt_settings(adapt_steps), progress=not (no_progress or as_json),
                            layout=layout, lexical=not no_lexical)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--k/--overlap") from None
    report.total_seconds = time.perf_counter() - start
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    where = report.backend.get("path") or f"{report.backend.get('url')} / {report.backend.get('collection')}"
    click.echo(f"ingested {report.files} files ({report.documents} documents) into {report.backend['engine']} "
               f"{printable(_show(str(where)))}")
    click.echo(f"  chunks     {report.chunks} ({report.unchanged} unchanged)")
    click.echo(f"  written    {report.written} points; deleted {report.deleted} stale, pruned {report.pruned}")
    if report.skipped:
        reasons = ", ".join(f"{reason} x{n}" for reason, n in report.skip_reasons().items())
        click.echo(f"  skipped    {len(report.skipped)}: {printable(reasons)}")
        for s in report.skipped[:5]:
            click.echo(f"             {printable(_show(s.path))}: {printable(s.reason)}")
        if len(report.skipped) > 5:
            click.echo(f"             ... {len(report.skipped) - 5} more (--json lists all)")
    if report.adapt and report.adapt.get("adapted"):
        click.echo(f"  adapted    head fitted to {report.adapt['sampled']} chunks in {report.adapt['seconds']:.1f} s "
                   f"after embedding them in {report.adapt['embed_seconds']:.1f} s (model {report.adapt['model_id']})")
    click.echo(f"  collection {report.points} points")
    click.echo(f"  time       {report.total_seconds:.1f} s in all; ingest {report.seconds:.1f} s "
               f"({report.chunks_per_s:.1f} chunks/s; encode {report.encode_seconds:.1f} s, "
               f"index {report.upsert_seconds:.2f} s)")


def adapt_settings(steps: int | None):
    """An ``AdaptConfig`` bounded to ``steps`` optimiser steps (None = the defaults)."""
    if steps is None:
        return None
    from ..training.adapt import AdaptConfig

    return AdaptConfig(min_steps=min(steps, AdaptConfig.min_steps), max_steps=steps)


def parse_filters(items: tuple[str, ...]) -> dict[str, list]:
    """``--filter key=value`` options -> a payload filter (see :mod:`csr_adapter.filters`)."""
    try:
        return parse_filter_args(items)
    except FilterError as exc:
        raise click.BadParameter(str(exc), param_hint="--filter") from None


MAX_QUERIES_BYTES = 256 * 2**20  # a --queries file larger than this is refused, not read whole


def read_queries(file: str) -> list[tuple[str, str]]:
    """``(id, text)`` per query from text lines or JSONL ``{"id", "text"}`` (``-`` = stdin), read up to
    :data:`MAX_QUERIES_BYTES`; a missing file, a folder or a special file, a bad line: one ``--queries`` error."""
    import stat

    from ..text import check_utf8, json_loads

    def bad(message: str) -> click.BadParameter:
        return click.BadParameter(message, param_hint="--queries")

    if file == "-":
        data = click.get_binary_stream("stdin").read(MAX_QUERIES_BYTES + 1)
    else:
        try:
            mode = os.stat(file).st_mode
            if not stat.S_ISREG(mode):
                raise bad(f"{printable(file)}: {'a folder' if stat.S_ISDIR(mode) else 'not a regular file'}; "
                          "give a file of queries")
            with open(file, "rb") as f:
                data = f.read(MAX_QUERIES_BYTES + 1)
        except OSError as exc:
            raise bad(f"{printable(file)}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_QUERIES_BYTES:
        raise bad(f"{printable(file)}: over {MAX_QUERIES_BYTES // 2**20} MB of queries; split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise bad(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    out: list[tuple[str, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                row = json_loads(line)
            except json.JSONDecodeError as exc:
                raise bad(f"line {n}: not JSON ({exc.msg})") from None
            query = row.get("text", row.get("query")) if isinstance(row, dict) else None
            if not isinstance(query, str):
                raise bad(f"line {n}: a JSONL query needs a string 'text'")
            try:
                out.append((check_utf8(str(row.get("id", row.get("_id", n))), f"line {n} id"),
                            check_utf8(query, f"line {n}")))
            except ValueError as exc:
                raise bad(str(exc)) from None
        else:
            out.append((str(n), line))
    return out


@click.command()
@click.argument("query", required=False)
@click.option("--queries", "queries_file", type=click.Path(allow_dash=True), default=None,
              help="Answer every query in FILE (text lines, or JSONL {\"id\", \"text\"}; - for stdin): "
                   "one JSON line per query.")
@backend_options
@model_option
@click.option("--top-k", type=Int(min=1), default=5, show_default=True, help="Results to print.")
@click.option("--k", type=Int(), default=None,
              help="Active latents of the query code (default: the collection's k; a model with query_k codes "
                   "queries at max(k, query_k)).")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Payload equality filter (repeatable): source, file, doc_id, chunk or a metadata key.")
@click.option("--mode", type=click.Choice(["fused", "codes", "lexical", "dense", "hybrid"]), default=None,
              help="fused: codes + BM25 (the default where the collection has a lexical vector); codes: CSR codes "
                   "alone (with the FAISS fallback); lexical: BM25 alone; dense: the dense vector; hybrid: codes + "
                   "dense (a --hybrid ingest).")
@click.option("--hybrid", is_flag=True, help="Same as --mode hybrid.")
@click.option("--rrf-k", type=Int(min=1), default=None,
              help=f"RRF constant: score = sum of 1/(rrf_k + rank), rank from 0 (default: fused 10, hybrid "
                   f"{DEFAULT_RRF_K}).")
@click.option("--per-document/--per-chunk", "per_document", default=None,
              help="One hit per document (its best chunk), or every chunk. Default: per document with --queries, "
                   "per chunk otherwise.")
@click.option("--no-fallback", is_flag=True, help="Sparse only, even if the collection has a FAISS fallback.")
@click.option("--budget", type=click.Choice(["fixed", "threshold"]), default="fixed", show_default=True,
              help="Query code: top-k, or the model's calibrated threshold (pooled-budget models).")
@device_option
@runtime_option
@threads_option
@json_option
def search(query: str | None, queries_file: str | None, backend: str, collection: str, store: str | None,
           url: str | None, api_key: str | None, model: str | None, top_k: int, k: int | None,
           filters: tuple[str, ...], mode: str | None, hybrid: bool, rrf_k: int | None, per_document: bool | None,
           no_fallback: bool, budget: str, device: str, runtime: str, threads: int, as_json: bool) -> None:
    """Search a collection for QUERY (or every query in --queries FILE); prints rank, score, source, snippet.

    The collection's own model (adapted at ingest) is used unless --model is given.
    """
    from ..collection import Collection
    from ..runtime import set_threads

    if (query is None) == (queries_file is None):
        raise click.UsageError("give a QUERY or --queries FILE (not both)")
    if hybrid and mode not in (None, "hybrid"):
        raise click.UsageError(f"--hybrid and --mode {mode} are exclusive")
    mode = "hybrid" if hybrid else mode
    flt = parse_filters(filters)
    batch = read_queries(queries_file) if queries_file is not None else [("1", query)]
    per_document = queries_file is not None if per_document is None else per_document
    set_threads(threads)
    col = Collection(collection, backend=backend, path=store, url=url, api_key=api_key, model=model, device=device,
                     runtime=runtime, threads=threads or None, client=server_client(url))
    try:
        searcher = col.searcher(not no_fallback, mode=mode, per_document=per_document, k=k, rrf_k=rrf_k,
                                budget=budget)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--k") from None
    with searcher:
        if mode is None and searcher.sparse is not None and "lexical" not in searcher.sparse.capabilities \
                and not as_json and queries_file is None and backend == "qdrant":
            click.echo(f"note: collection {collection!r} has no lexical (BM25) vector, so search uses the codes "
                       "alone; `ingest PATH --adapt` (or --recreate) adds it", err=True)
        results = []
        for lo in range(0, len(batch), 256):
            results += [a.hits for a in searcher.search_batch([t for _, t in batch[lo:lo + 256]], top_k, flt)]
    if queries_file is not None:
        for (qid, text), hits in zip(batch, results):
            click.echo(json.dumps({"id": qid, "query": text,
                                   "hits": [{"rank": r, **h.to_dict()} for r, h in enumerate(hits, 1)]}))
        return
    hits = results[0]
    if as_json:
        click.echo(json.dumps([{"rank": r, **h.to_dict()} for r, h in enumerate(hits, 1)], indent=2))
        return
    if not hits:
        click.echo("no results (the collection is empty, the filter matches nothing, or no chunk shares "
                   "an active latent with the query)")
        return
    for rank, hit in enumerate(hits, 1):
        p = hit.payload
        file = p.get("file") if isinstance(p.get("file"), str) else None
        where = printable(_show(str(p.get("source", hit.id)), file))
        if int(p.get("n_chunks", 1) or 1) > 1:
            where += f" [{int(p.get('chunk', 0)) + 1}/{p['n_chunks']}]"
        snippet = " ".join(printable(str(p.get("text", ""))).split())
        snippet = snippet if len(snippet) <= 100 else snippet[:99] + "…"
        via = "" if hit.served_by in ("sparse", "fused") else f"  ({hit.served_by})"
        click.echo(f"{rank:>3}  {hit.score:.4f}  {where}{via}  {snippet}")
