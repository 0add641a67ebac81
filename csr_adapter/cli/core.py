"""`csr-adapter info` and `csr-adapter encode`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import (
    Int,
    device_option,
    json_option,
    load_encoder,
    model_option,
    qdrant_key_options,
    runtime_option,
    server_client,
    threads_option,
)
from .safe import printable


def _files(directory: Path) -> list[dict]:
    return [{"file": str(p.relative_to(directory)), "bytes": p.stat().st_size}
            for p in sorted(directory.rglob("*")) if p.is_file()]


def collection_info(name: str, backend: str, store: str | None, url: str | None, api_key: str | None,
                    device: str, sample: int, client=None) -> dict:
    """A collection's metadata, its model and how well that model's head fits what the collection holds
    (``client``: a ``QdrantClient`` to use instead of connecting to ``url``)."""
    from ..collection import Collection
    from ..model_store import find_model

    col = Collection(name, backend=backend, path=store, url=url, api_key=api_key, device=device, client=client)
    meta = col.meta()
    if meta is None:
        from ..integrations.base import CollectionNotFoundError

        raise CollectionNotFoundError(f"collection {name!r} does not exist (ingest into it first)")
    enc = col.encoder
    where = find_model(meta.model_id, col.path if col.embedded else None)
    training = enc.config.training or {}
    return {"collection": name, "points": col.count(), "meta": meta.to_dict(),
            "model_dir": str(where) if where else "shipped default",
            "adapted": training.get("method") == "CSRv2 corpus adaptation",
            "fit": col.fit_report(sample=sample)}


@click.command()
@click.argument("model", required=False, type=click.Path(file_okay=False))
@click.option("--collection", default=None, help="Show this collection: its model and how well it fits the corpus.")
@click.option("--backend", default="qdrant", show_default=True, help="Backend holding --collection.")
@click.option("--path", "store", type=click.Path(file_okay=False), default=None, help="Embedded storage root.")
@click.option("--url", envvar="QDRANT_URL", default=None, help="Qdrant server URL (env QDRANT_URL).")
@qdrant_key_options
@click.option("--sample", type=Int(min=1), default=2000, show_default=True,
              help="Points sampled for the collection's fit report.")
@device_option
@json_option
def info(model: str | None, collection: str | None, backend: str, store: str | None, url: str | None,
         api_key: str | None, sample: int, device: str, as_json: bool) -> None:
    """Show a model's backbone, d, h, default k, files and sizes (default: the shipped model), or with
    --collection a collection's model and how well its head fits the collection's current corpus
    (reconstruction error and dead latents on a sample: re-adapt with `ingest --adapt` when it drifts)."""
    from ..encoder import DEFAULT_MODEL_DIR

    if collection is not None:
        data = collection_info(collection, backend, store, url, api_key, device, sample, server_client(url))
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        fit, meta = data["fit"], data["meta"]
        click.echo(f"collection   {data['collection']} ({data['points']} points, k={meta['k']}, h={meta['h']})")
        click.echo(printable(f"model        {meta['model_id']} "
                             f"({'adapted to its corpus' if data['adapted'] else 'not adapted'})  {data['model_dir']}"))
        lexical = meta.get("lexical")
        click.echo("lexical      " + (f"BM25 (k1 {lexical['k1']}, b {lexical['b']}, average chunk length "
                                      f"{lexical['avgdl']:g} terms): search fuses it with the codes" if lexical else
                                      "none (search uses the codes alone; `ingest PATH --adapt` adds it)"))
        if fit.get("rows"):
            then = fit.get("recon_nmse_at_adaptation")
            click.echo(f"fit now      reconstruction error {fit['recon_nmse']:.3f}"
                       + (f" (at adaptation {then:.3f})" if then is not None else "")
                       + f", dead latents {fit['dead_pct']:.1f}% on {fit['rows']} sampled chunks")
        return

    enc = load_encoder(model, device)
    directory = Path(model) if model else DEFAULT_MODEL_DIR
    data = enc.info() | {"path": str(directory.resolve()), "files": _files(directory),
                         "bytes_per_code_at_k": 8 * enc.k}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"model        {printable(data['path'])}")
    click.echo(f"model id     {data['model_id']}")
    click.echo(f"backbone     {data['backbone']} (d={data['d']}, max_seq_length={data['max_seq_length']})")
    click.echo(f"latents h    {data['h']}")
    click.echo(f"default k    {data['k']}  ({data['bytes_per_code_at_k']} bytes/code as int32+float32)")
    click.echo(f"device       {data['device']}")
    for f in data["files"]:
        click.echo(f"  {f['bytes']:>12,d}  {printable(f['file'])}")
    for dataset, result in (data["scores"] or {}).items():
        click.echo(f"scores on {dataset}:")
        for row in result.get("rows", []):
            click.echo("  " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


@click.command()
@click.argument("texts", nargs=-1, required=True)
@click.option("--k", type=Int(), default=None, help="Active latents per code (default: the model's k).")
@click.option("--budget", type=click.Choice(["fixed", "threshold", "corpus"]), default="fixed", show_default=True,
              help="fixed: top-k per text; threshold: the model's calibrated θ; corpus: k x texts postings in all.")
@click.option("--query", "as_query", is_flag=True,
              help="Code the texts as search queries (query prefix; max(k, query_k) latents).")
@model_option
@device_option
@runtime_option
@threads_option
@json_option
def encode(texts: tuple[str, ...], k: int | None, budget: str, as_query: bool, model: str | None, device: str,
           runtime: str, threads: int, as_json: bool) -> None:
    """Print the sparse code of each TEXT (use '-' to read one text per line from stdin)."""
    if texts == ("-",):
        texts = tuple(line.rstrip("\n") for line in click.get_text_stream("stdin"))
    enc = load_encoder(model, device, threads, runtime)
    try:
        codes = (enc.encode_queries(list(texts), k=k, budget=budget) if as_query
                 else enc.encode(list(texts), k=k, budget=budget))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--k") from None
    rows = [{"text": t, "indices": r.indices.tolist(), "values": [round(float(v), 6) for v in r.values]}
            for t, r in zip(texts, codes)]
    if as_json:
        click.echo(json.dumps(rows if len(rows) > 1 else rows[0]))
        return
    for row in rows:
        pairs = " ".join(f"{i}:{v:.4f}" for i, v in zip(row["indices"], row["values"]))
        click.echo(f"{row['text'][:60]!r}\t{pairs}")
