"""Training checkpoints: tensors in safetensors, everything else in JSON (never pickle).

Layout under ``DIR/checkpoint/``: ``state-eNNNN.safetensors`` (head, optimiser moments, dead-latent
counters, and the backbone when it is finetuned) and ``state.json`` (epoch, step, config, history,
optimiser hyper-parameters). ``state.json`` is replaced last, so a crash never leaves it pointing at a
half-written tensor file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import CSRAdapterError

CHECKPOINT_DIR = "checkpoint"
STATE_JSON = "state.json"


class CheckpointError(CSRAdapterError):
    """A checkpoint that is missing, corrupt or from a different run."""


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into tensors (for safetensors) and JSON-able metadata."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{name}"] = value.detach().cpu().contiguous().reshape(-1).clone()
                scalars[f"{pid}.{name}.shape"] = list(value.shape)
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            shape = meta["scalars"].get(f"{pid}.{name}.shape")
            state.setdefault(int(pid), {})[name] = value.reshape(shape) if shape is not None else value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        if not name.endswith(".shape"):
            state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(out: Path, epoch: int, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write epoch ``epoch``'s checkpoint atomically and drop older tensor files."""
    from safetensors.torch import save_file

    folder = Path(out) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"state-e{epoch:04d}.safetensors"
    tmp = folder / (name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(folder / name)
    meta = dict(meta, epoch=epoch, tensors=name)
    jtmp = folder / (STATE_JSON + ".tmp")
    jtmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    jtmp.replace(folder / STATE_JSON)
    for old in folder.glob("state-e*.safetensors"):
        if old.name != name:
            old.unlink()
    return folder


def has_checkpoint(out: Path) -> bool:
    return (Path(out) / CHECKPOINT_DIR / STATE_JSON).exists()


def load_checkpoint(out: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(out) / CHECKPOINT_DIR
    try:
        meta = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / meta["tensors"]))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{folder}: checkpoint incomplete ({exc.filename} missing)") from None
    except (json.JSONDecodeError, KeyError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"{folder}: corrupt checkpoint ({exc})") from None
    return tensors, meta
