"""`csr-adapter export`: copy a collection from the embedded store to a Qdrant server, or back (backups)."""

from __future__ import annotations

import json
import os

import click

from .options import Int, json_option, qdrant_key_options, server_client
from .safe import printable


@click.command()
@click.option("--collection", default="csr", show_default=True, help="Collection to copy.")
@click.option("--to-collection", default=None, help="Name of the copy (default: the same as --collection).")
@click.option("--url", envvar="QDRANT_URL", default=None,
              help="Copy TO this Qdrant server (env QDRANT_URL; ignored when --from-url is given).")
@click.option("--from-url", default=None, help="Copy FROM this Qdrant server (into the embedded store: a backup).")
@click.option("--path", "store", type=click.Path(file_okay=False), default=None,
              help="The embedded store root (source with --url, target with --from-url). "
                   "Default: ./.csr-adapter/qdrant")
@qdrant_key_options
@click.option("--model", "model", type=click.Path(exists=True, file_okay=False), default=None,
              help="The collection's model directory, when it is not stored on this machine.")
@click.option("--recreate", is_flag=True, help="Delete the target collection first.")
@click.option("--prune", is_flag=True, help="Delete target points that the source does not have.")
@click.option("--batch-size", type=Int(min=1, max=65536), default=256, show_default=True,
              help="Points per read/compare/write round trip.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def export(collection: str, to_collection: str | None, url: str | None, from_url: str | None, store: str | None,
           api_key: str | None, model: str | None, recreate: bool, prune: bool, batch_size: int, no_progress: bool,
           as_json: bool) -> None:
    """Copy a collection (points, payloads, metadata and its model) to a Qdrant server (--url), or from one into
    the embedded store (--from-url, for backups); both URLs copy server to server.

    Safe to re-run: only missing or different points are written, so a killed export resumes, and the source
    is never changed. Afterwards `csr-adapter search --url URL --collection NAME` needs no --model.
    """
    from ..collection import Collection
    from ..export import export_collection

    ctx = click.get_current_context()
    if from_url and ctx.get_parameter_source("url") != click.core.ParameterSource.COMMANDLINE:
        url = None  # QDRANT_URL names the server that search uses, not a second server to copy to
    if not url and not from_url:
        raise click.UsageError("give --url URL (copy the embedded collection to a server) or --from-url URL "
                               "(copy a server collection into the embedded store)")
    if url and from_url and store is not None:
        raise click.UsageError("--path has no use with both --url and --from-url (server to server)")
    target_name = to_collection or collection
    if from_url and from_url == url and target_name == collection:
        raise click.UsageError("source and target are the same collection: give --to-collection")

    def side(name: str, server: str | None) -> Collection:
        if server:
            return Collection(name, url=server, api_key=api_key, device="cpu", client=server_client(server))
        return Collection(name, path=store, device="cpu")

    env_url = os.environ.pop("QDRANT_URL", None)  # consumed above: the embedded side must not pick it up
    try:
        source, target = side(collection, from_url), side(target_name, url)
        report = export_collection(source, target, model=model, recreate=recreate, prune=prune,
                                   batch_size=batch_size, progress=not (no_progress or as_json))
    finally:
        if env_url is not None:
            os.environ["QDRANT_URL"] = env_url
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return

    def where(info: dict) -> str:
        return printable(f"{info['engine']} {info.get('path') or info.get('url')} / {info['collection']}")

    click.echo(f"exported {report.points} points from {where(report.source)} to {where(report.target)}")
    click.echo(f"  written    {report.written} points ({report.unchanged} already there)")
    if report.extra:
        click.echo(f"  extra      {report.extra} target points not in the source: "
                   + (f"pruned {report.pruned}" if prune else "kept (--prune deletes them)"))
    click.echo(f"  model      {report.source['meta']['model_id']} "
               + (f"stored in {report.model_dir}" if report.model_dir else "(the shipped default)"))
    click.echo(f"  target     {report.target['points']} points; time {report.seconds:.1f} s")
