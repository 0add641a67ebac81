"""Options shared by several subcommands."""

from __future__ import annotations

import math

import click

INT_LIMIT = 2**31 - 1  # |int option| at most this: a C int, so torch, FAISS and NumPy never overflow
FLOAT_LIMIT = 1e12  # |float option| at most this (finite, so products like MB x 1e6 stay finite)


class Int(click.IntRange):
    """An integer option in [min, max], and never past :data:`INT_LIMIT`: a huge number is a usage error."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.min is None and self.max is None:
            self.name = "integer"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if rv is not None and abs(rv) > INT_LIMIT:
            self.fail(f"{rv} is out of range (at most {INT_LIMIT} in size)", param, ctx)
        return rv

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()


class Float(click.FloatRange):
    """A float option in [min, max], finite and never past :data:`FLOAT_LIMIT` (no nan, no inf)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.min is None and self.max is None:
            self.name = "float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if rv is not None and not (math.isfinite(rv) and abs(rv) <= FLOAT_LIMIT):
            self.fail(f"{value} is not a finite number of at most {FLOAT_LIMIT:g} in size", param, ctx)
        return rv

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()


DEVICES = ("auto", "cpu", "cuda")  # mirrors csr_adapter.runtime.DEVICES without importing torch

model_option = click.option(
    "--model", "model", type=click.Path(file_okay=False), default=None,
    help="Model directory (config.json + head.safetensors). Default: the shipped model.",
)
device_option = click.option(
    "--device", type=click.Choice(DEVICES), default="auto", show_default=True,
    help="Where the backbone runs.",
)
RUNTIMES = ("torch", "torch-bf16", "onnx", "onnx-int8")  # = csr_adapter.onnx_backbone.RUNTIMES, no torch import
runtime_option = click.option(
    "--runtime", type=click.Choice(RUNTIMES), default="torch", show_default=True,
    help="How the backbone runs: torch fp32 or bf16 (fast on CPUs with AVX512-BF16/AMX), or ONNX Runtime fp32 / "
         "int8 on CPU (pip install 'csr-adapter[onnx]'; exported once, cached under ~/.cache/csr-adapter/onnx).",
)
threads_option = click.option(
    "--threads", type=Int(0, 1024), default=0, help="CPU threads for torch (0 = the cores available).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def load_encoder(model: str | None, device: str, threads: int = 0, runtime: str = "torch"):
    """Set threads, then load the encoder (heavy imports happen here, not at CLI start-up)."""
    from ..encoder import CSREncoder
    from ..runtime import set_threads

    set_threads(threads)
    return CSREncoder.from_pretrained(model, device=device, runtime=runtime)


def qdrant_key_options(fn):
    """``--qdrant-api-key`` (env ``QDRANT_API_KEY``) and its deprecated alias ``--api-key``, merged into the
    command's ``api_key`` argument. (``serve --api-key`` is the server's own Bearer key, hence the rename.)"""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, qdrant_api_key: str | None = None, **kwargs):
        alias = kwargs.pop("api_key", None)
        if alias is not None:
            click.echo("warning: --api-key is deprecated here: use --qdrant-api-key (env QDRANT_API_KEY)", err=True)
            ctx = click.get_current_context()
            given = ctx.get_parameter_source("qdrant_api_key") == click.core.ParameterSource.COMMANDLINE
            if given and qdrant_api_key != alias:
                raise click.BadParameter("give --qdrant-api-key or its old name --api-key, not both",
                                         param_hint="--api-key")
            qdrant_api_key = alias
        return fn(*args, api_key=qdrant_api_key, **kwargs)

    wrapper = click.option("--api-key", "api_key", default=None, metavar="KEY",
                           help="Deprecated name of --qdrant-api-key.")(wrapper)
    return click.option("--qdrant-api-key", "qdrant_api_key", envvar="QDRANT_API_KEY", default=None,
                        help="Qdrant server API key (env QDRANT_API_KEY); with --backend milvus, the Milvus "
                             "token (else env MILVUS_TOKEN).")(wrapper)


def server_client(url: str | None):
    """The ``QdrantClient`` that a program running the CLI in-process handed over for ``url``, else None.

    ``cli.main(obj={"qdrant_clients": {url: client}})`` (or click's ``CliRunner.invoke(..., obj=...)``) makes
    ``--url URL`` use that client (e.g. qdrant-client's local mode) instead of connecting to URL."""
    ctx = click.get_current_context(silent=True)
    if not url or ctx is None or not isinstance(ctx.find_root().obj, dict):
        return None
    return ctx.find_root().obj.get("qdrant_clients", {}).get(url)
