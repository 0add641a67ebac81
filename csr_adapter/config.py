"""Model configuration: the JSON half of a model directory (the other half is safetensors)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .defaults import DEFAULT_K, check_k
from .errors import ModelLoadError

CONFIG_NAME = "config.json"
HEAD_NAME = "head.safetensors"
CARD_NAME = "README.md"
BACKBONE_DIR = "backbone"
FORMAT = "csr-adapter/1"
DOCUMENT_CODINGS = ("topk", "pursuit")


@dataclass
class CSRConfig:
    """Everything needed to rebuild a :class:`~csr_adapter.CSREncoder` besides tensors."""

    backbone: str = "all-MiniLM-L6-v2"
    d: int = 384
    h: int = 1536
    k: int = DEFAULT_K
    max_seq_length: int | None = None
    truncation_side: str = "right"
    normalize: bool = True
    query_k: int | None = None          # queries are coded at max(k, query_k) latents (None: same k as documents)
    query_prefix: str = ""
    document_prefix: str = ""
    document_coding: str = "topk"       # "topk" (the encoder's top-k) or "pursuit" (matching pursuit over the
                                        # decoder rows; see CSRHead.pursuit): how documents are coded
    rescore_depth: int = 0              # > 0: search re-scores this many best code-matches by the cosine of the
                                        # query's dense vector and each document's decoded code (0 = off)
    format: str = FORMAT
    training: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("d", "h", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"config {name} must be a positive int, got {value!r}")
        try:
            check_k(self.k, self.h)
        except ValueError as exc:
            raise ValueError(f"config {exc}") from None
        if self.query_k is not None and (isinstance(self.query_k, bool) or not isinstance(self.query_k, int)
                                         or not 1 <= self.query_k <= self.h):
            raise ValueError(f"config query_k must be null or an int in [1, h={self.h}], got {self.query_k!r}")
        if self.document_coding not in DOCUMENT_CODINGS:
            raise ValueError(f"document_coding must be one of {DOCUMENT_CODINGS}, got {self.document_coding!r}")
        if isinstance(self.rescore_depth, bool) or not isinstance(self.rescore_depth, int) or self.rescore_depth < 0:
            raise ValueError(f"config rescore_depth must be an int >= 0, got {self.rescore_depth!r}")
        if self.truncation_side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {self.truncation_side!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CSRConfig:
        known = {f.name for f in fields(cls)}
        extra = dict(data.get("extra") or {})
        extra.update({k: v for k, v in data.items() if k not in known})
        return cls(**{k: v for k, v in data.items() if k in known and k != "extra"}, extra=extra)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> CSRConfig:
        path = Path(directory) / CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelLoadError(f"{path}: missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path}: invalid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path}: expected a JSON object")
        for key in ("d", "h"):
            if key not in data:
                raise ModelLoadError(f"{path}: missing key {key!r}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path}: {exc}") from None
