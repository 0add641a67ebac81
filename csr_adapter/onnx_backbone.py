"""ONNX Runtime for the backbone's transformer: export once, cache by content hash, optionally int8, run.

Runtimes (``Backbone(runtime=...)``, ``CSREncoder.from_pretrained(runtime=...)``, ``--runtime``):

- ``torch``: the transformers model as loaded (the default); ``torch-bf16``: the same in bfloat16.
- ``onnx``: the same transformer exported with ``torch.onnx`` (eager attention, so ONNX Runtime's BERT
  fusions apply: one Attention, SkipLayerNorm and BiasGelu op per layer), graph-optimised by
  ``onnxruntime.transformers.optimizer``. fp32: the same numbers as torch up to rounding.
- ``onnx-int8``: that graph with its weights quantized to int8 **per output channel** by ONNX Runtime's
  dynamic quantization (activations quantized on the fly, one scale per batch tensor, so a text's vector
  depends a little on its batch), except each layer's FFN output projection (:data:`FP32_NODES`), which stays
  fp32. Per-tensor weights lost too much (mean dense cosine to fp32 0.935 on SciFact abstracts); per channel
  keeps 0.99+, and the fp32 FFN outputs keep the worst texts above 0.99.

Only ``last_hidden_state`` comes from the session: pooling and normalisation stay in
:meth:`Backbone.forward <csr_adapter.backbone.Backbone.forward>`, identical for every runtime.

Exported files are cached under ``$CSR_ADAPTER_CACHE/onnx`` (default ``~/.cache/csr-adapter/onnx``), named
by the sha256 of the backbone's ``model.safetensors`` (the upstream hash for the shipped backbone), the
runtime and :data:`EXPORT_VERSION`: export takes ~10 s once, later loads reuse the file.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import CSRAdapterError, MissingExtraError

RUNTIMES = ("torch", "torch-bf16", "onnx", "onnx-int8")
EXACT_RUNTIMES = ("torch", "onnx")  # same vectors up to float rounding (they share embedding caches)
EXPORT_VERSION = "v3"  # bump when the export or quantization recipe changes
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# MatMuls left in fp32 by onnx-int8: every layer's FFN output projection (its inputs have the outliers that
# per-tensor dynamic activation scales handle worst). On 1,183 SciFact texts: dense cosine to fp32 min / mean
# 0.9923 / 0.9971 vs 0.9911 / 0.9954 with layer 0's alone, for ~19% more encode time.
FP32_NODES = tuple(f"layer.{i}/output/dense/MatMul" for i in range(6))


def check_runtime(runtime: str | None) -> str:
    name = (runtime or "torch").lower()
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    return name


def require_onnxruntime(runtime: str):
    """``onnxruntime`` or a one-line :class:`MissingExtraError` naming the extra to install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise MissingExtraError(f"runtime={runtime!r} needs ONNX Runtime: pip install 'csr-adapter[onnx]'") from None
    return onnxruntime


def cache_dir() -> Path:
    root = os.environ.get("CSR_ADAPTER_CACHE") or Path.home() / ".cache" / "csr-adapter"
    return Path(root) / "onnx"


def weights_sha256(backbone) -> str:
    """Content hash of the backbone's weights (the recorded upstream hash for the shipped backbone)."""
    from .provenance import BACKBONE_FILES, DEFAULT_BACKBONE, sha256_file

    if backbone.identity == DEFAULT_BACKBONE:
        return BACKBONE_FILES["model.safetensors"][1]
    return sha256_file(backbone.path / "model.safetensors")


def model_file(backbone, runtime: str) -> Path:
    """The cached ONNX file for ``backbone`` at ``runtime`` (exported, optimised, quantized on first use)."""
    key = f"{weights_sha256(backbone)[:16]}-{runtime}-{EXPORT_VERSION}"
    target = cache_dir() / f"{key}.onnx"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fp32 = cache_dir() / f"{weights_sha256(backbone)[:16]}-onnx-{EXPORT_VERSION}.onnx"
    if not fp32.exists():
        _atomic(fp32, lambda tmp: _export_optimised(backbone, tmp))
    if runtime == "onnx-int8":
        _atomic(target, lambda tmp: _quantize(fp32, tmp))
    return target


def _atomic(target: Path, write) -> None:
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp.onnx")
    try:
        write(tmp)
        tmp.replace(target)
    except CSRAdapterError:
        raise
    except Exception as exc:  # exporter / optimiser failures come in many types: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CSRAdapterError(f"cannot build the ONNX backbone {target.name} ({first[:200]})") from None
    finally:
        tmp.unlink(missing_ok=True)


class _LastHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids, return_dict=True).last_hidden_state


def _export_optimised(backbone, out: Path) -> None:
    """Export ``backbone.model`` (a CPU fp32 copy, eager attention) and apply ORT's transformer fusions."""
    model = copy.deepcopy(backbone.model).to("cpu", torch.float32).eval()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")  # SDPA's mask code defeats ORT's attention fusion
    features = backbone.tokenize(["an example text to trace", "a second, longer example text to trace it with"])
    args = tuple(features[name] for name in INPUTS)
    raw = out.with_name(out.stem + ".raw.onnx")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(_LastHidden(model), args, str(raw), input_names=list(INPUTS),
                              output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "sequence"} for n in (*INPUTS, "last_hidden_state")})
        from onnxruntime.transformers import optimizer

        cfg = model.config
        kind = cfg.model_type if cfg.model_type in ("bert", "roberta", "distilbert") else None
        if kind is None:  # no fusion recipe: ORT's own graph optimisations still run at load time
            raw.replace(out)
            return
        optimised = optimizer.optimize_model(str(raw), model_type=kind, num_heads=cfg.num_attention_heads,
                                             hidden_size=cfg.hidden_size, opt_level=1, use_gpu=False)
        optimised.save_model_to_file(str(out))
    finally:
        raw.unlink(missing_ok=True)


def _quantize(fp32: Path, out: Path) -> None:
    import logging

    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32), load_external_data=False).graph
    keep = [n.name for n in graph.node if n.op_type == "MatMul" and any(p in n.name for p in FP32_NODES)]
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" advice on every call
    try:
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
    finally:
        logging.getLogger().setLevel(level)


class OnnxTransformer:
    """An ONNX Runtime session standing in for the transformer: features in, ``last_hidden_state`` out.

    Threads follow torch's intra-op setting when the session is made (``set_threads`` first); with
    ``OMP_WAIT_POLICY=PASSIVE`` its threads do not spin (a shared box).
    """

    def __init__(self, backbone, runtime: str) -> None:
        self.ort = require_onnxruntime(runtime)
        self.runtime = runtime
        self.path = model_file(backbone, runtime)
        self._sessions: dict[str, object] = {}

    def session(self, device: torch.device):
        key = str(device)
        if key not in self._sessions:
            providers = ["CPUExecutionProvider"]
            if device.type == "cuda":
                if self.runtime != "onnx" or "CUDAExecutionProvider" not in self.ort.get_available_providers():
                    raise CSRAdapterError(f"runtime={self.runtime!r} runs on CPU here (no CUDA execution provider"
                                          f"{' for int8' if self.runtime == 'onnx-int8' else ''}): use device='cpu' "
                                          "or runtime='torch'")
                providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
            opts = self.ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = self.ort.InferenceSession(str(self.path), opts, providers=providers)
            self._sessions[key] = (session, [i.name for i in session.get_inputs()])
        return self._sessions[key]

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        device = features["input_ids"].device
        session, names = self.session(device)
        feeds = {}
        for name in names:
            value = features.get(name)
            if value is None:  # e.g. a tokenizer without token types
                value = torch.zeros_like(features["input_ids"])
            feeds[name] = np.ascontiguousarray(value.cpu().numpy(), dtype=np.int64)
        out = session.run(["last_hidden_state"], feeds)[0]
        return torch.from_numpy(out).to(device)
