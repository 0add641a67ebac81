"""`csr-adapter info` and `csr-adapter encode`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import device_option, json_option, load_encoder, model_option, threads_option


def _files(directory: Path) -> list[dict]:
    return [{"file": str(p.relative_to(directory)), "bytes": p.stat().st_size}
            for p in sorted(directory.rglob("*")) if p.is_file()]


@click.command()
@click.argument("model", required=False, type=click.Path(file_okay=False))
@device_option
@json_option
def info(model: str | None, device: str, as_json: bool) -> None:
    """Show a model's backbone, d, h, default k, files and sizes (default: the shipped model)."""
    from ..encoder import DEFAULT_MODEL_DIR

    enc = load_encoder(model, device)
    directory = Path(model) if model else DEFAULT_MODEL_DIR
    data = enc.info() | {"path": str(directory.resolve()), "files": _files(directory),
                         "bytes_per_code_at_k": 8 * enc.k}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"model        {data['path']}")
    click.echo(f"model id     {data['model_id']}")
    click.echo(f"backbone     {data['backbone']} (d={data['d']}, max_seq_length={data['max_seq_length']})")
    click.echo(f"latents h    {data['h']}")
    click.echo(f"default k    {data['k']}  ({data['bytes_per_code_at_k']} bytes/code as int32+float32)")
    click.echo(f"device       {data['device']}")
    for f in data["files"]:
        click.echo(f"  {f['bytes']:>12,d}  {f['file']}")
    for dataset, result in (data["scores"] or {}).items():
        click.echo(f"scores on {dataset}:")
        for row in result.get("rows", []):
            click.echo("  " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


@click.command()
@click.argument("texts", nargs=-1, required=True)
@click.option("--k", type=int, default=None, help="Active latents per code (default: the model's k).")
@click.option("--budget", type=click.Choice(["fixed", "threshold", "corpus"]), default="fixed", show_default=True,
              help="fixed: top-k per text; threshold: the model's calibrated θ; corpus: k x texts postings in all.")
@model_option
@device_option
@threads_option
@json_option
def encode(texts: tuple[str, ...], k: int | None, budget: str, model: str | None, device: str, threads: int,
           as_json: bool) -> None:
    """Print the sparse code of each TEXT (use '-' to read one text per line from stdin)."""
    if texts == ("-",):
        texts = tuple(line.rstrip("\n") for line in click.get_text_stream("stdin"))
    enc = load_encoder(model, device, threads)
    try:
        codes = enc.encode(list(texts), k=k, budget=budget)
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
