"""Options shared by several subcommands."""

from __future__ import annotations

import click

DEVICES = ("auto", "cpu", "cuda")  # mirrors csr_adapter.runtime.DEVICES without importing torch

model_option = click.option(
    "--model", "model", type=click.Path(file_okay=False), default=None,
    help="Model directory (config.json + head.safetensors). Default: the shipped model.",
)
device_option = click.option(
    "--device", type=click.Choice(DEVICES), default="auto", show_default=True,
    help="Where the backbone runs.",
)
threads_option = click.option(
    "--threads", type=int, default=0, help="CPU threads for torch (0 = the cores available).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def load_encoder(model: str | None, device: str, threads: int = 0):
    """Set threads, then load the encoder (heavy imports happen here, not at CLI start-up)."""
    from ..encoder import CSREncoder
    from ..runtime import set_threads

    set_threads(threads)
    return CSREncoder.from_pretrained(model, device=device)
