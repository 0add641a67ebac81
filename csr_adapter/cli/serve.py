"""`csr-adapter serve`: the HTTP service (TEI-compatible embeddings + collection search), extra ``serve``."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from ..defaults import check_k
from .options import Float, Int, device_option, load_encoder, model_option, runtime_option, threads_option
from .safe import printable


def read_api_key(api_key: str | None, api_key_file: str | None) -> str | None:
    """The API key from ``--api-key``/``CSR_ADAPTER_API_KEY`` or the first line of ``--api-key-file``."""
    if api_key_file is None:
        return api_key
    if api_key:
        raise click.BadParameter("give --api-key (or CSR_ADAPTER_API_KEY) or --api-key-file, not both",
                                 param_hint="--api-key-file")
    try:
        lines = Path(api_key_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{api_key_file}: cannot read ({getattr(exc, 'strerror', None) or exc})",
                                 param_hint="--api-key-file") from None
    key = lines[0].strip() if lines else ""
    if not key:
        raise click.BadParameter(f"{api_key_file}: no key on its first line", param_hint="--api-key-file")
    return key


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@model_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", type=Int(0, 65535), default=8080, show_default=True)
@click.option("--k", type=Int(min=1), default=None, help="Default active latents per code (model's k).")
@click.option("--collection", "collections", multiple=True, help="Ingested collection for /search (repeatable).")
@click.option("--backend", default="qdrant", show_default=True,
              help="Backend holding the collections: qdrant (embedded, or a server with --url) or faiss.")
@click.option("--path", "store_path", type=click.Path(file_okay=False), default=None,
              help="Embedded storage root, as given to ingest (default ./.csr-adapter/qdrant).")
@click.option("--url", envvar="QDRANT_URL", default=None, help="Qdrant server URL (env QDRANT_URL).")
@click.option("--qdrant-api-key", envvar="QDRANT_API_KEY", default=None,
              help="Qdrant server API key (env QDRANT_API_KEY).")
@click.option("--no-fallback", is_flag=True, help="Sparse only, even where a collection has a FAISS fallback.")
@click.option("--api-key", envvar="CSR_ADAPTER_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on every route but /health (env CSR_ADAPTER_API_KEY, "
                   "which unlike the option is not visible in ps).")
@click.option("--api-key-file", type=click.Path(dir_okay=False), default=None,
              help="Read the API key from the first line of this file (instead of --api-key).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, envvar="CSR_ADAPTER_ALLOWED_HOSTS",
              help="Also accept this Host header (repeatable; env CSR_ADAPTER_ALLOWED_HOSTS, space-separated; "
                   "'*' = any). Default: 127.0.0.1, localhost, [::1] and --host; others get 421.")
@click.option("--body-timeout", type=Float(min=0.001), default=10.0, show_default=True,
              help="Seconds a client may take to send its request body before a 408.")
@click.option("--header-timeout", type=Float(min=0.001), default=10.0, show_default=True,
              help="Seconds a client may take to send a request head (new or kept-alive connection) before it "
                   "is closed.")
@click.option("--keep-alive-timeout", type=Float(min=0.001), default=5.0, show_default=True,
              help="Seconds an idle kept-alive connection stays open.")
@click.option("--max-connections", type=Int(min=1), default=256, show_default=True,
              help="Open connections; one more gets 503 and is closed.")
@click.option("--source-root", type=click.Path(file_okay=False), default=None,
              help="/search shows source and file paths relative to this folder (default: the working "
                   "directory; a file outside it shows its name only).")
@click.option("--max-batch-size", type=Int(min=1), default=32, show_default=True,
              help="Texts per forward pass across concurrent requests (1 = no micro-batching).")
@click.option("--max-wait-ms", type=Float(min=0), default=5.0, show_default=True,
              help="How long a request may wait for others to share its forward pass.")
@click.option("--max-queue", type=Int(min=1), default=1024, show_default=True,
              help="Texts waiting for the model before requests get 429.")
@click.option("--timeout", type=Float(min=0.001), default=30.0, show_default=True,
              help="Seconds a request waits for its result before a 429.")
@click.option("--max-inputs", type=Int(min=1), default=256, show_default=True, help="Texts per request.")
@click.option("--auto-truncate/--no-auto-truncate", default=True, show_default=True,
              help="Cut inputs longer than the model's max_seq_length when a request does not say "
                   "(TEI's truncate); --no-auto-truncate refuses them with 413, TEI's default.")
@click.option("--max-chars", type=Int(min=1), default=20_000, show_default=True, help="Characters per text.")
@device_option
@runtime_option
@threads_option
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
def serve(model: str | None, host: str, port: int, k: int | None, collections: tuple[str, ...], backend: str,
          store_path: str | None, url: str | None, qdrant_api_key: str | None, no_fallback: bool,
          api_key: str | None, api_key_file: str | None, allowed_hosts: tuple[str, ...], body_timeout: float,
          header_timeout: float, keep_alive_timeout: float, max_connections: int,
          source_root: str | None, max_batch_size: int, max_wait_ms: float, max_queue: int, timeout: float,
          max_inputs: int, auto_truncate: bool, max_chars: int, device: str, runtime: str, threads: int,
          log_level: str) -> None:
    """Serve POST /embed_sparse, /embed (TEI-compatible), /v1/embeddings (OpenAI-compatible), /search,
    GET /health, /info, /metrics (Prometheus) and /docs over HTTP."""
    from ..errors import require

    require("fastapi", "serve")
    uvicorn = require("uvicorn", "serve")
    from ..server import ServeConfig, create_app
    from ..server.config import DEFAULT_HOSTS

    api_key = read_api_key(api_key, api_key_file)
    if not _is_loopback(host) and not api_key:
        click.echo(f"warning: binding {printable(host)} without --api-key: anyone who can reach it can use it",
                   err=True)
    if host in ("0.0.0.0", "::", "") and not allowed_hosts:
        click.echo(f"note: binding {printable(host)}: only Host headers 127.0.0.1, localhost and [::1] are served; "
                   "add --allowed-host NAME for the names clients use", err=True)
    hosts = tuple(dict.fromkeys(h for h in (*DEFAULT_HOSTS, host, *allowed_hosts) if h.strip()))
    try:
        config = ServeConfig(max_inputs=max_inputs, max_chars=max_chars, max_batch_size=max_batch_size,
                             max_wait_ms=max_wait_ms, max_queue=max_queue, timeout_s=timeout, api_key=api_key,
                             allowed_hosts=hosts, body_timeout_s=body_timeout, source_root=source_root,
                             header_timeout_s=header_timeout, keep_alive_s=keep_alive_timeout,
                             max_connections=max_connections,
                             auto_truncate=auto_truncate)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    encoder = load_encoder(model, device, threads, runtime)
    if k is not None:
        try:
            encoder.config.k = check_k(k, encoder.h)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--k") from None
    from ..server.collections import open_collections

    searchers = open_collections(encoder, collections, backend=backend, path=store_path, url=url,
                                 api_key=qdrant_api_key, threads=threads or None, fallback=not no_fallback,
                                 own_model=model is None)
    from ..server.collections import served_encoder

    encoder, name = served_encoder(encoder, searchers, model)
    if k is not None:
        encoder.config.k = check_k(k, encoder.h)
    app = create_app(encoder, searchers, config, model_name=name)
    click.echo(f"csr-adapter serving {encoder.config.backbone} (h={encoder.h}, k={encoder.k}, "
               f"runtime {encoder.backbone.runtime}) "
               f"on http://{printable(host)}:{port}  (docs at /docs)", err=True)
    try:
        from ..server.http import uvicorn_options

        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug",
                    **uvicorn_options(config))
    finally:
        for searcher in searchers.values():
            searcher.close()
