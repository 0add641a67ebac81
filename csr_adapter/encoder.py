"""`CSREncoder`: backbone + CSR head serving k-sparse embeddings, saved/loaded Hugging Face style."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .backbone import DEFAULT_BACKBONE, Backbone
from .card import render_card
from .config import BACKBONE_DIR, CARD_NAME, HEAD_NAME, CSRConfig
from .defaults import DEFAULT_K, check_k
from .errors import ModelLoadError
from .head import CSRHead
from .onnx_backbone import check_runtime
from .runtime import resolve_device
from .sparse import SparseEmbedding, SparseEmbeddings
from .text import blank

PURSUIT_MAX_K = 64  # documents asked for more latents are coded by the top-k (pursuit costs k matmuls)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


def _check_texts(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be str, got {type(text).__name__}")
    return list(texts)


def _as_batch(codes: SparseEmbeddings | SparseEmbedding, name: str, h: int) -> SparseEmbeddings:
    if isinstance(codes, SparseEmbedding):
        codes = SparseEmbeddings(np.array([0, len(codes)]), codes.indices, codes.values, codes.dim)
    if not isinstance(codes, SparseEmbeddings):
        raise TypeError(f"{name} must be SparseEmbeddings or a SparseEmbedding (encode texts first), "
                        f"got {type(codes).__name__}")
    if codes.dim != h:
        raise ValueError(f"{name} has dim {codes.dim}, this model has h={h}")
    return codes


def _load_head(path: Path, config: CSRConfig) -> CSRHead:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = path / HEAD_NAME
    if not file.exists():
        raise ModelLoadError(f"{file}: missing")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{file}: corrupt or truncated safetensors file ({exc})") from None
    expected = {"W": (config.h, config.d), "b_pre": (config.d,), "b_lat": (config.h,)}
    for name, shape in expected.items():
        if name not in tensors:
            raise ModelLoadError(f"{file}: tensor {name!r} missing")
        if tuple(tensors[name].shape) != shape:
            raise ModelLoadError(
                f"{file}: tensor {name!r} has shape {tuple(tensors[name].shape)}, config.json expects {shape}"
            )
        bad = int((~torch.isfinite(tensors[name].float())).sum())
        if bad:
            raise ModelLoadError(f"{file}: tensor {name!r} has non-finite values ({bad} NaN or inf): the model is "
                                 "broken; retrain or replace it")
    head = CSRHead(config.d, config.h)
    head.load_state_dict({k: v.float() for k, v in tensors.items() if k in expected})
    return head


class CSREncoder:
    """Encode texts into L2-normalised k-sparse CSR codes (``SparseEmbeddings``).

    >>> enc = CSREncoder.from_pretrained()            # the shipped default model
    >>> docs = enc.encode_documents(["CSR codes are sparse."], k=8)
    >>> queries = enc.encode_queries(["what is sparse?"])
    >>> scores = queries.dot(docs)                    # cosine similarity
    """

    def __init__(self, backbone: Backbone, head: CSRHead, config: CSRConfig, device: str = "auto") -> None:
        if backbone.dim != head.d or config.d != head.d or config.h != head.h:
            raise ModelLoadError(
                f"shape mismatch: backbone dim {backbone.dim}, head d={head.d} h={head.h}, "
                f"config d={config.d} h={config.h}"
            )
        self.config = config
        self.device = resolve_device(device)
        self.backbone = backbone.to(self.device).eval()
        self.head = head.to(self.device).eval()
        self._model_id: str | None = None

    # -- shapes -----------------------------------------------------------------------------
    @property
    def d(self) -> int:
        return self.config.d

    @property
    def h(self) -> int:
        return self.config.h

    @property
    def k(self) -> int:
        return self.config.k

    @property
    def model_id(self) -> str:
        """Identity of head weights + backbone (used to refuse mixing models in one index).

        ``config.query_k`` and ``config.rescore_depth`` are not part of it: they change how queries are coded and
        scored, never the stored documents. ``config.document_coding`` is, when it is not the top-k.
        """
        if self._model_id is None:
            digest = hashlib.sha256(self.backbone.fingerprint().encode())
            for name, tensor in sorted(self.head.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            if self.config.document_coding != "topk":
                digest.update(f"document_coding={self.config.document_coding}".encode())
            self._model_id = digest.hexdigest()[:16]
        return self._model_id

    # -- loading / saving ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str = "auto",
                        backbone: Backbone | None = None, runtime: str | None = None) -> CSREncoder:
        """Load a model directory (``config.json`` + ``head.safetensors``); ``None`` = shipped default.

        ``backbone``: an already loaded backbone, reused (not reloaded) when the model names that same
        stock backbone with the same length settings and runtime (e.g. heads adapted per collection).
        ``runtime``: how the backbone runs, ``torch`` (default), ``torch-bf16``, ``onnx`` or ``onnx-int8`` (CPU;
        need the ``[onnx]`` extra; see :mod:`csr_adapter.onnx_backbone`); ``None`` = the given backbone's, else
        torch."""
        directory = Path(path).expanduser() if path is not None else DEFAULT_MODEL_DIR
        if not directory.is_dir():
            what = "shipped default model" if path is None else "model directory"
            raise ModelLoadError(f"{directory}: {what} not found")
        config = CSRConfig.load(directory)
        head = _load_head(directory, config)
        backbone_ref = config.backbone
        if (directory / backbone_ref).is_dir():
            backbone_ref = str(directory / backbone_ref)
            backbone = None
        runtime = check_runtime(runtime or (backbone.runtime if backbone is not None else None))
        if runtime.startswith("onnx") and str(device) == "auto":
            device = "cpu"  # the onnx runtimes are CPU runtimes (fp32 onnx on CUDA: ask --device cuda)
        if backbone is None or (backbone.identity, backbone.max_seq_length, backbone.truncation_side,
                                backbone.runtime) != (backbone_ref, config.max_seq_length, config.truncation_side,
                                                      runtime):
            backbone = Backbone(backbone_ref, config.max_seq_length, config.truncation_side, runtime=runtime)
        if backbone.dim != config.d:
            raise ModelLoadError(
                f"{directory}: backbone {config.backbone!r} has dim {backbone.dim}, config d={config.d}"
            )
        return cls(backbone, head, config, device=device)

    @classmethod
    def from_backbone(
        cls, backbone: str | None = None, h: int | None = None, k: int = DEFAULT_K, device: str = "auto",
        max_seq_length: int | None = None, seed: int = 0,
    ) -> CSREncoder:
        """A fresh (untrained) head over a backbone, as the starting point for training."""
        bb = Backbone(backbone, max_seq_length)
        h = h or 4 * bb.dim
        generator = torch.Generator().manual_seed(seed)
        head = CSRHead(bb.dim, h)
        head.reset_parameters(generator)
        ident = DEFAULT_BACKBONE if bb.identity == DEFAULT_BACKBONE else bb.identity
        config = CSRConfig(backbone=ident, d=bb.dim, h=h, k=k, max_seq_length=bb.max_seq_length)
        return cls(bb, head, config, device=device)

    def save_pretrained(self, directory: str | os.PathLike, save_backbone: bool | None = None) -> Path:
        """Write ``config.json``, ``head.safetensors``, ``README.md`` (and ``backbone/`` if not stock)."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if save_backbone is None:
            save_backbone = self.backbone.identity != DEFAULT_BACKBONE
        config = CSRConfig.from_dict(self.config.to_dict())
        config.max_seq_length = self.backbone.max_seq_length
        if save_backbone:
            target = out / BACKBONE_DIR
            if target.exists() and target.resolve() != self.backbone.path:
                shutil.rmtree(target)
            if not target.exists():
                self.backbone.save(target)
            config.backbone = BACKBONE_DIR
        tensors = {k: v.detach().cpu().float().contiguous().clone() for k, v in self.head.state_dict().items()}
        tmp = out / (HEAD_NAME + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": "pt", "d": str(config.d), "h": str(config.h)})
        tmp.replace(out / HEAD_NAME)
        config.save(out)
        self._model_id = None
        (out / CARD_NAME).write_text(render_card(config, self.model_id), encoding="utf-8")
        return out

    # -- encoding --------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_dense(
        self, texts: str | Sequence[str], batch_size: int = 32, show_progress_bar: bool | None = None,
        prefix: str = "", *, truncation_side: str | None = None, normalize: bool | None = None,
    ) -> np.ndarray:
        """Backbone embeddings, shape ``(n, d)`` float32, in input order. Empty texts give zero rows.

        ``truncation_side``: which end of a text longer than ``max_seq_length`` is cut (default: the
        backbone's, right). ``normalize=False``: the pooled vectors without the backbone's L2 normalisation
        (what the CSR head sees is always the backbone's configured output)."""
        texts = _check_texts(texts)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        out = np.zeros((len(texts), self.d), dtype=np.float32)
        live = [i for i, t in enumerate(texts) if not blank(t)]  # zero-width/control-only texts are empty too
        order = sorted(live, key=lambda i: -len(texts[i]))  # length-sorted batches pad less
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc="encode", unit="text", disable=not show_progress_bar, leave=False)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            features = self.backbone.tokenize([prefix + texts[i] for i in idx], truncation_side=truncation_side)
            features = {k: v.to(self.device) for k, v in features.items()}
            out[idx] = self.backbone(features, normalize=normalize).float().cpu().numpy()
            bar.update(len(idx))
        bar.close()
        return out

    @torch.inference_mode()
    def sparsify(
        self, dense: np.ndarray | torch.Tensor, k: int | None = None, normalize: bool | None = None,
        budget: str = "fixed", role: str = "document",
    ) -> SparseEmbeddings:
        """Apply the CSR head to backbone embeddings; all-zero input rows give empty rows.

        ``budget``: ``fixed`` (top-k per row), ``threshold`` or ``corpus`` (see :mod:`csr_adapter.budget`).
        ``role="query"`` with a fixed budget codes at ``max(k, config.query_k)`` latents: a wider query code
        scored against k-sparse documents (asymmetric codes; document storage is unchanged).
        ``role="document"`` with ``config.document_coding == "pursuit"`` codes by matching pursuit over the decoder
        rows (:meth:`CSRHead.pursuit`) for ``k <= 64``, by the top-k above.
        """
        k = check_k(self.k if k is None else k, self.h)
        if role == "query" and budget == "fixed" and self.config.query_k is not None:
            k = max(k, self.config.query_k)
        x = torch.as_tensor(np.asarray(dense, dtype=np.float32) if not torch.is_tensor(dense) else dense)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(f"expected dense embeddings of shape (n, {self.d}), got {tuple(x.shape)}")
        if budget != "fixed":
            from . import budget as _budget

            normalize = self.config.normalize if normalize is None else normalize
            return _budget.sparsify(self, x, budget, k, role, normalize)
        if x.shape[0] == 0:
            return SparseEmbeddings.empty(self.h)
        if role == "document" and self.config.document_coding == "pursuit" and k <= PURSUIT_MAX_K:
            values, indices = self.head.pursuit(x.to(self.device), k)
        else:
            values, indices = self.head.pre_activation(x.to(self.device)).topk(k, dim=-1)
        values[(x == 0).all(dim=1).to(self.device)] = 0.0  # empty text -> empty row
        normalize = self.config.normalize if normalize is None else normalize
        return SparseEmbeddings.from_topk(values.cpu().numpy(), indices.cpu().numpy(), self.h, normalize=normalize)

    def _directions(self, codes) -> np.ndarray:
        """Each row of ``codes`` (a scipy sparse matrix, ``(n, h)``) decoded through the head's rows
        (``sum_i v_i W_i``, no bias), scaled to unit length; an empty code stays a zero row. Scale-free, so stored
        normalised codes work."""
        decoded = np.asarray(codes @ self.head.W.detach().cpu().numpy(), dtype=np.float32)
        return decoded / np.maximum(np.linalg.norm(decoded, axis=1, keepdims=True), 1e-12)

    def rescore(self, query: np.ndarray, codes: Sequence[SparseEmbedding]) -> np.ndarray:
        """Cosine of one query's backbone vector ``query`` ``(d,)`` and each document code decoded through the
        head's rows: the score that ``config.rescore_depth`` puts on the best code matches. An empty code
        scores 0."""
        import scipy.sparse as sp

        if not len(codes):
            return np.zeros(0, dtype=np.float32)
        indptr = np.cumsum([0] + [len(c.indices) for c in codes])
        matrix = sp.csr_matrix((np.concatenate([c.values for c in codes]), np.concatenate([c.indices for c in codes]),
                                indptr), shape=(len(codes), self.h))
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        return self._directions(matrix) @ (q / max(float(np.linalg.norm(q)), 1e-12))

    def score_matrix(self, queries: np.ndarray, qcodes: SparseEmbeddings, dcodes: SparseEmbeddings,
                     depth: int | None = None) -> np.ndarray:
        """``(n_queries, n_docs)`` scores as search ranks them: code dot products, and with
        ``config.rescore_depth`` (or ``depth``) the best that many positive matches of each query re-scored by
        :meth:`rescore`, placed above the rest (``2 + cosine``). ``queries`` are the backbone vectors."""
        scores = np.asarray(qcodes.dot(dcodes), dtype=np.float32)
        depth = min(self.config.rescore_depth if depth is None else depth, scores.shape[1])
        if not depth:
            return scores
        q = np.asarray(queries, dtype=np.float32)
        cos = (q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)) @ self._directions(dcodes.to_scipy()).T
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        picked = np.take_along_axis(scores, top, 1) > 0
        rows = np.repeat(np.arange(len(scores))[:, None], depth, 1)
        scores[rows[picked], top[picked]] = 2.0 + cos[rows[picked], top[picked]]
        return scores

    def encode(
        self, texts: str | Sequence[str], k: int | None = None, batch_size: int = 32,
        show_progress_bar: bool | None = None, normalize: bool | None = None, prefix: str = "",
        budget: str = "fixed", role: str = "document",
    ) -> SparseEmbeddings:
        """k-sparse codes for ``texts`` (a str counts as a batch of one), in input order.

        ``budget="threshold"`` (calibrated θ, batch-independent) or ``"corpus"`` (``texts`` is the corpus:
        exactly ``len(texts)·k`` postings) give a variable number of active dims per text.
        """
        k = check_k(self.k if k is None else k, self.h)
        dense = self.encode_dense(texts, batch_size=batch_size, show_progress_bar=show_progress_bar, prefix=prefix)
        return self.sparsify(dense, k=k, normalize=normalize, budget=budget, role=role)

    def encode_query(self, texts: str | Sequence[str], k: int | None = None, **kwargs) -> SparseEmbeddings:
        """Encode search queries (adds the model's query prefix, if any; the model may code queries
        wider than documents). Same name as sentence-transformers v5+; ``encode_queries`` is an alias."""
        return self.encode(texts, k=k, prefix=self.config.query_prefix, role="query", **kwargs)

    def encode_document(self, texts: str | Sequence[str], k: int | None = None, **kwargs) -> SparseEmbeddings:
        """Encode documents / passages (adds the model's document prefix, if any). Same name as
        sentence-transformers v5+; ``encode_documents`` is an alias."""
        return self.encode(texts, k=k, prefix=self.config.document_prefix, role="document", **kwargs)

    encode_queries = encode_query
    encode_documents = encode_document

    similarity_fn_name = "dot"

    def similarity(self, a: SparseEmbeddings | SparseEmbedding, b: SparseEmbeddings | SparseEmbedding) -> np.ndarray:
        """Sparse dot products, shape ``(len(a), len(b))`` float32 (a single row counts as a batch of one),
        as sentence-transformers' ``similarity``. Codes are L2-normalised, so this is their cosine. Search ranks a
        model with ``config.rescore_depth`` (the shipped default) by :meth:`score_matrix` instead."""
        return _as_batch(a, "a", self.h).dot(_as_batch(b, "b", self.h))

    def with_query_k(self, query_k: int | None) -> CSREncoder:
        """The same model (backbone and head shared) with queries coded at ``max(k, query_k)`` latents;
        ``None``: at the documents' k. Documents, and so the model id, are unchanged."""
        config = CSRConfig.from_dict({**self.config.to_dict(), "query_k": query_k})
        return CSREncoder(self.backbone, self.head, config, device=str(self.device))

    @torch.inference_mode()
    def decode(self, codes: SparseEmbeddings) -> np.ndarray:
        """Map codes back to the backbone's dense space: ``W^T z + b_pre``, shape ``(n, d)``.

        Codes are L2-normalised by default, so this is the reconstruction up to the code's scale.
        """
        if codes.dim != self.h:
            raise ValueError(f"codes have dim {codes.dim}, this model has h={self.h}")
        z = torch.from_numpy(codes.to_dense()).to(self.device)
        return self.head.decode(z).cpu().numpy()

    def adapt(
        self, texts: Sequence[str] | None = None, *, dense: np.ndarray | None = None,
        groups: Sequence[int] | None = None, k: int | None = None, config=None, batch_size: int = 32,
        progress: bool = False, queries: np.ndarray | None = None, query_rows: Sequence[int] | None = None,
    ) -> CSREncoder:
        """A new encoder whose head is fitted to one corpus (texts only: no queries, no labels).

        Pass the corpus ``texts`` (embedded here) or their backbone embeddings ``dense``; ``groups[i]``
        names the document of row i (chunks of one document are positives). Pseudo-queries (sentences cut
        from ``texts``) are embedded and used unless ``config.pseudo_queries == 0``; or pass their vectors
        as ``queries`` with ``query_rows[j]`` = the row each was cut from. ``config`` is an
        :class:`~csr_adapter.training.adapt.AdaptConfig`. The backbone is shared, not copied; the result
        is saved with ``save_pretrained`` like any model.
        """
        import copy

        from .training.adapt import AdaptConfig, adapt_head

        if dense is None:
            if texts is None:
                raise ValueError("adapt needs texts or their dense embeddings")
            dense = self.encode_dense(texts, batch_size=batch_size, prefix=self.config.document_prefix,
                                      show_progress_bar=progress)
        cfg = copy.deepcopy(config) if config is not None else AdaptConfig()
        cfg.k = check_k(self.k if k is None else k, self.h)
        if queries is None and texts is not None and cfg.pseudo_queries > 0:
            from .training.adapt import pseudo_queries

            snippets, query_rows = pseudo_queries(list(texts), cfg.pseudo_queries, cfg.seed)
            queries = self.encode_dense(snippets, batch_size=batch_size, prefix=self.config.query_prefix)
        head, report = adapt_head(self.head, np.asarray(dense), cfg,
                                  None if groups is None else np.asarray(groups, dtype=np.int64),
                                  progress=progress, device=self.device, queries=queries,
                                  query_rows=None if query_rows is None else np.asarray(query_rows))
        config_out = CSRConfig.from_dict(self.config.to_dict())
        config_out.h = head.h  # the adapted head may be wider than this one (see AdaptConfig.h)
        config_out.k = cfg.k
        config_out.query_k = None if cfg.query_k is None else min(cfg.query_k, head.h)
        # an adapted head's own top-k codes score as well as pursuit + re-scoring (dev sets ADI, TIME)
        config_out.document_coding, config_out.rescore_depth = "topk", 0
        config_out.training = {"method": "CSRv2 corpus adaptation", "base_model_id": self.model_id,
                               "base_training": self.config.training, "adapt": cfg.to_dict(),
                               "adapt_report": report.to_dict()}
        config_out.scores = {}
        return CSREncoder(self.backbone, head, config_out, device=str(self.device))

    def info(self) -> dict:
        """Shape, identity and files of this model (what ``csr-adapter info`` prints)."""
        return {"model_id": self.model_id, "backbone": self.config.backbone, "d": self.d, "h": self.h,
                "k": self.k, "query_k": self.config.query_k, "document_coding": self.config.document_coding,
                "rescore_depth": self.config.rescore_depth, "max_seq_length": self.backbone.max_seq_length,
                "device": str(self.device), "runtime": self.backbone.runtime,
                "training": self.config.training, "scores": self.config.scores}
