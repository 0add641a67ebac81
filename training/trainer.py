"""The CSRv2 trainer: frozen backbone over cached embeddings, or end-to-end backbone finetuning.

Per optimiser step ``t`` with annealed ``k_t`` (:func:`~.losses.annealed_k`)::

    L = nMSE(x, x^_{k_t}) + w4 * nMSE(x, x^_{4 k_t}) + a * AuxK + c * (SupCon | InfoNCE)

on one batch of one source (:mod:`.data`). A latent is dead after ``dead_window`` steps without firing
in the k-pass (the 4k pass does not keep a latent alive: serving uses k). Epochs are planned from
``(seed, epoch)``, so a resumed run replays exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..defaults import DEFAULT_K
from ..encoder import CSREncoder
from ..errors import CSRAdapterError, TrainConfigError
from ..head import CSRHead, topk_relu
from ..runtime import set_threads
from . import checkpoint as ckpt
from .beir import BeirData
from .data import Batch, Source, plan_epoch
from .losses import annealed_k, auxk_loss, dead_mask, infonce_loss, normalized_mse, supcon_loss

log = logging.getLogger("csr_adapter.training")


@dataclass
class TrainConfig:
    """All training settings (flat, JSON-serialisable; stored in the model card)."""

    k: int = DEFAULT_K
    h: int | None = None               # latents; None = 4 * d
    k_init: int = 64                   # annealing start; <= h/4 so the 4k term fits
    anneal_frac: float = 0.7           # fraction of steps over which k falls to its target
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3                   # head learning rate (Adam, constant)
    backbone_lr: float = 2e-5          # backbone learning rate when finetuning
    adam_eps: float = 6.25e-10
    recon4k_weight: float = 0.125
    aux_weight: float = 1 / 32
    k_aux: int = 512
    dead_window: int = 50              # steps without firing after which a latent counts as dead
    contrastive_weight: float = 0.1
    extra_ks: list[int] = field(default_factory=list)  # also train codes at these k (recon + contrastive)
    temperature: float = 0.1
    fill_frac: float = 0.5             # share of a batch given to unlabelled texts (e.g. BEIR corpus)
    group_size: int = 4                # items drawn per label at a time (labelled classes)
    holdout_frac: float = 0.0          # share of BEIR train queries held out for model selection
    select_best: bool = True           # with a hold-out: keep the epoch with the best held-out nDCG@10
    finetune_backbone: bool = False
    backbone: str | None = None        # None = stock all-MiniLM-L6-v2
    max_seq_length: int | None = None
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    cache_dir: str | None = None
    eval_max_docs: int = 2000          # finetuning: corpus sample for the per-epoch held-out nDCG
    init_from: str | None = None       # start the head from this model directory (e.g. a frozen-trained one)
    budget: str = "fixed"              # "pooled": batch top B*k per role with [k_min, k_max] (see .budget)
    k_min: int | None = None           # pooled: per-item bounds (None = max(1, k // 2) and 4 * k)
    k_max: int | None = None
    threshold_frac: float = 0.1        # pooled: final share of steps trained in threshold mode
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# settings that must match for --resume (the rest, e.g. threads or device, may change)
RESUME_KEYS = ("k", "h", "k_init", "anneal_frac", "epochs", "batch_size", "lr", "backbone_lr", "recon4k_weight",
               "aux_weight", "k_aux", "dead_window", "contrastive_weight", "temperature", "fill_frac",
               "group_size", "holdout_frac", "extra_ks", "finetune_backbone", "backbone", "max_seq_length", "seed",
               "init_from", "budget", "k_min", "k_max", "threshold_frac")


def validate(cfg: TrainConfig, d: int) -> int:
    """Check settings against the backbone dim ``d``; return ``h``. One-line errors."""
    h = cfg.h or 4 * d
    checks = [
        (cfg.k >= 1, f"--k must be >= 1, got {cfg.k}"),
        (h >= 1, f"--h must be >= 1, got {h}"),
        (cfg.k_init >= cfg.k, f"k_init ({cfg.k_init}) < k ({cfg.k}): annealing only lowers k"),
        (4 * cfg.k <= h, f"k={cfg.k} > h/4 = {h // 4}: the 4k reconstruction term needs 4k <= h"),
        (4 * cfg.k_init <= h, f"k_init={cfg.k_init} > h/4 = {h // 4}: the 4k term needs 4*k_init <= h"),
        (cfg.epochs >= 1, f"--epochs must be >= 1, got {cfg.epochs}"),
        (cfg.batch_size >= 2, f"--batch-size must be >= 2, got {cfg.batch_size}"),
        (0.0 <= cfg.anneal_frac <= 1.0, f"anneal_frac must be in [0, 1], got {cfg.anneal_frac}"),
        (0.0 <= cfg.fill_frac < 1.0, f"fill_frac must be in [0, 1), got {cfg.fill_frac}"),
        (0.0 <= cfg.holdout_frac < 1.0, f"holdout_frac must be in [0, 1), got {cfg.holdout_frac}"),
        (cfg.lr > 0 and cfg.backbone_lr > 0, "learning rates must be positive"),
        (cfg.temperature > 0, f"temperature must be positive, got {cfg.temperature}"),
        (cfg.dead_window >= 1, f"dead_window must be >= 1 step, got {cfg.dead_window}"),
        (cfg.group_size >= 2, f"group_size must be >= 2, got {cfg.group_size}"),
        (all(1 <= e <= h for e in cfg.extra_ks), f"extra_ks must lie in [1, h={h}], got {cfg.extra_ks}"),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainConfigError(message)
    return h


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def estimate_step_bytes(cfg: TrainConfig, d: int, h: int, seq_len: int, layers: int = 6,
                        intermediate: int | None = None) -> int:
    """A conservative estimate of one training step's peak activation memory."""
    b = cfg.batch_size
    head = 4 * b * (14 * h + 8 * b + 8 * d)
    if not cfg.finetune_backbone:
        return head
    inter = intermediate or 4 * d
    per_token_layer = 4 * (12 * d + 3 * inter) + 4 * 2 * 12 * seq_len  # hidden states + attention maps
    return head + b * seq_len * layers * per_token_layer


def check_memory(cfg: TrainConfig, encoder: CSREncoder) -> None:
    """Refuse a batch size whose step would not fit in memory (before training starts)."""
    mcfg = encoder.backbone.model.config
    need = estimate_step_bytes(cfg, encoder.d, encoder.h, encoder.backbone.max_seq_length,
                               getattr(mcfg, "num_hidden_layers", 6), getattr(mcfg, "intermediate_size", None))
    have = _available_bytes(encoder.device)
    if need > 0.8 * have:
        fit = max(1, int(cfg.batch_size * 0.8 * have / need))
        raise TrainConfigError(
            f"--batch-size {cfg.batch_size} needs ~{need / 2**30:.1f} GiB per step on {encoder.device} but "
            f"~{have / 2**30:.1f} GiB is available: out of memory; try --batch-size {fit} or less")


# -- the trainer --------------------------------------------------------------------------------------
@dataclass
class EpochLog:
    epoch: int
    steps: int
    k: int
    loss: float
    recon: float
    recon4k: float
    aux: float
    contrastive: float
    dead_pct: float
    seconds: float
    heldout_ndcg10: float | None = None


class Trainer:
    """Train a CSR head (and optionally the backbone) on one or more :class:`~.data.Source`."""

    def __init__(self, sources: list[Source], cfg: TrainConfig, out: str | Path,
                 heldout: BeirData | None = None, resume: bool = False,
                 progress: bool = True, echo: Callable[[str], None] | None = None) -> None:
        if not sources or not any(len(s) for s in sources):
            raise CSRAdapterError("empty dataset: no training texts")
        self.sources, self.cfg, self.out = sources, cfg, Path(out)
        self.heldout, self.progress = heldout, progress
        self.echo = echo or (lambda msg: log.info(msg))
        set_threads(cfg.threads)
        if ckpt.has_checkpoint(self.out) and not resume:
            raise ckpt.CheckpointError(f"{self.out} holds a checkpoint of an earlier run: pass --resume to "
                                       f"continue it, or choose another --out")
        if resume and not ckpt.has_checkpoint(self.out):
            raise ckpt.CheckpointError(f"{self.out}: --resume given but there is no checkpoint to resume")
        self.encoder = CSREncoder.from_backbone(cfg.backbone, h=cfg.h, k=cfg.k, device=cfg.device,
                                                max_seq_length=cfg.max_seq_length, seed=cfg.seed)
        self.h = validate(cfg, self.encoder.d)
        check_memory(cfg, self.encoder)
        self.device = self.encoder.device
        self.head: CSRHead = self.encoder.head
        self.plans = [plan_epoch(sources, cfg.batch_size, np.random.default_rng([cfg.seed, e]),
                                 cfg.fill_frac, cfg.group_size) for e in range(cfg.epochs)]
        if not any(self.plans):
            raise CSRAdapterError("empty dataset: no training batches")
        self.total_steps = sum(len(p) for p in self.plans)
        from .budget import make_budget

        self.budget = make_budget(cfg, self.h, self.total_steps)  # None unless --budget pooled
        self.embeddings: list[torch.Tensor] | None = None if cfg.finetune_backbone else self._embed_all()
        self.steps_since = torch.zeros(self.h, dtype=torch.long)
        self.step, self.epoch, self.history = 0, 0, []
        self.best: tuple[float, int] | None = None
        self.optimizer = self._optimizer()
        if resume:
            self._resume()
        elif cfg.init_from:
            self._init_from(Path(cfg.init_from))
        else:
            self._init_bias()

    # -- setup ---------------------------------------------------------------------------------------
    def _embed_all(self) -> list[torch.Tensor]:
        from ..cache import cached_dense

        out = []
        for src in self.sources:
            parts = [cached_dense(self.encoder, seg, cache_dir=self.cfg.cache_dir, show_progress_bar=self.progress,
                                  desc=f"embed {src.name}") for seg in src.segments if seg]
            out.append(torch.from_numpy(np.concatenate(parts)).float())
        return out

    def _init_bias(self) -> None:
        """b_pre = mean training embedding (the decoder's offset), from a seeded sample."""
        rng = np.random.default_rng([self.cfg.seed, 10**6])
        if self.embeddings is not None:
            x = torch.cat(self.embeddings)
            x = x[torch.from_numpy(rng.choice(len(x), size=min(len(x), 20000), replace=False))]
        else:
            texts = [t for s in self.sources for t in s.texts]
            pick = rng.choice(len(texts), size=min(len(texts), 512), replace=False)
            x = torch.from_numpy(self.encoder.encode_dense([texts[i] for i in pick], batch_size=32))
        with torch.no_grad():
            self.head.b_pre.copy_(x.mean(dim=0).to(self.head.b_pre.device))

    def _init_from(self, directory: Path) -> None:
        """Warm start: copy the head of a saved model (same d and h) before training."""
        from ..config import CSRConfig
        from ..encoder import _load_head

        conf = CSRConfig.load(directory)
        if (conf.d, conf.h) != (self.encoder.d, self.h):
            raise TrainConfigError(f"--init-from {directory}: head is d={conf.d} h={conf.h}, this run needs "
                                   f"d={self.encoder.d} h={self.h}")
        self.head.load_state_dict(_load_head(directory, conf).state_dict())

    def _optimizer(self) -> torch.optim.Optimizer:
        groups = [{"params": list(self.head.parameters()), "lr": self.cfg.lr}]
        if self.cfg.finetune_backbone:
            groups.append({"params": list(self.encoder.backbone.parameters()), "lr": self.cfg.backbone_lr})
        else:
            self.encoder.backbone.requires_grad_(False)
        return torch.optim.Adam(groups, eps=self.cfg.adam_eps)

    # -- checkpoints -----------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"step": self.step, "config": self.cfg.to_dict(), "history": [asdict(h) for h in self.history],
                "best": list(self.best) if self.best else None,
                "data": [s.fingerprint() for s in self.sources]}

    def _save(self) -> None:
        tensors = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        tensors["steps_since"] = self.steps_since.clone()
        if self.budget is not None:
            tensors.update(self.budget.state())
        opt_tensors, opt_meta = ckpt.optimizer_to_flat(self.optimizer)
        tensors.update(opt_tensors)
        if self.cfg.finetune_backbone:
            tensors.update({f"backbone.{k}": v for k, v in self.encoder.backbone.model.state_dict().items()})
        ckpt.save_checkpoint(self.out, self.epoch, tensors, self._meta() | {"optimizer": opt_meta})

    def _resume(self) -> None:
        tensors, meta = ckpt.load_checkpoint(self.out)
        old = meta.get("config", {})
        diff = [k for k in RESUME_KEYS if old.get(k) != self.cfg.to_dict()[k]]
        if diff:
            raise ckpt.CheckpointError(f"{self.out}: cannot resume: settings differ from the checkpoint's "
                                       f"({', '.join(f'{k}: {old.get(k)} -> {getattr(self.cfg, k)}' for k in diff)})")
        if meta.get("data") != [s.fingerprint() for s in self.sources]:
            raise ckpt.CheckpointError(f"{self.out}: cannot resume: the training data differ from the checkpoint's")
        self.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        self.steps_since = tensors["steps_since"].long()
        if self.budget is not None:
            self.budget.load(tensors)
        if self.cfg.finetune_backbone:
            self.encoder.backbone.model.load_state_dict(
                {k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")})
        ckpt.optimizer_from_flat(self.optimizer, tensors, meta["optimizer"])
        self.epoch, self.step = int(meta["epoch"]), int(meta["step"])
        self.history = [EpochLog(**h) for h in meta.get("history", [])]
        self.best = tuple(meta["best"]) if meta.get("best") else None
        self.echo(f"resumed from {self.out / ckpt.CHECKPOINT_DIR} after epoch {self.epoch} (step {self.step})")

    # -- one step ------------------------------------------------------------------------------------
    def _inputs(self, batch: Batch) -> torch.Tensor:
        idx = torch.from_numpy(batch.items)
        if self.embeddings is not None:
            return self.embeddings[batch.source][idx].to(self.device)
        texts = self.sources[batch.source].texts
        features = self.encoder.backbone.tokenize([texts[i] for i in batch.items])
        return self.encoder.backbone({k: v.to(self.device) for k, v in features.items()})

    def losses(self, x: torch.Tensor, batch: Batch, k: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """All loss terms for one batch at current ``k``; returns ``(terms, z)``."""
        cfg, head = self.cfg, self.head
        pre = head.pre_activation(x)
        if self.budget is not None:
            z, z4 = self.budget.select(pre, self.sources[batch.source], batch, k, self.step)
        else:
            z, z4 = topk_relu(pre, k), topk_relu(pre, min(4 * k, self.h))
        x_hat = head.decode(z)
        x_hat4 = head.decode(z4)
        dead = dead_mask(self.steps_since, cfg.dead_window).to(pre.device)
        terms = {
            "recon": normalized_mse(x, x_hat),
            "recon4k": normalized_mse(x, x_hat4),
            "aux": auxk_loss(pre, x, x_hat, dead, cfg.k_aux, head.W, head.b_pre),
        }
        terms["contrastive"] = self._contrastive(z, batch)
        terms["loss"] = (terms["recon"] + cfg.recon4k_weight * terms["recon4k"] + cfg.aux_weight * terms["aux"]
                         + cfg.contrastive_weight * terms["contrastive"])
        for extra in cfg.extra_ks:  # one head, several serving k: nested codes share pre
            z_e = topk_relu(pre, extra)
            terms["loss"] = terms["loss"] + (normalized_mse(x, head.decode(z_e))
                                             + cfg.contrastive_weight * self._contrastive(z_e, batch))
        return terms, z

    def _contrastive(self, z: torch.Tensor, batch: Batch) -> torch.Tensor:
        """InfoNCE for pair batches, supervised contrastive for labelled ones, else zero."""
        if batch.n_pairs:
            n = batch.n_pairs
            a, b = batch.items[:n], batch.items[n:2 * n]
            ignore = torch.from_numpy((a[:, None] == a[None, :]) | (b[:, None] == b[None, :]))
            return infonce_loss(z[:n], z[n:2 * n], self.cfg.temperature, ignore)
        if batch.positives is not None:
            return supcon_loss(z, torch.from_numpy(batch.positives), self.cfg.temperature)
        return z.new_zeros(())

    # -- evaluation ------------------------------------------------------------------------------------
    def heldout_ndcg(self, k: int | None = None) -> float | None:
        """nDCG@10 at target k on the held-out BEIR queries (full corpus if frozen, a sample if not)."""
        if self.heldout is None:
            return None
        from .evaluate import rank, retrieval_metrics

        data, k = self.heldout, k or self.cfg.k
        enc = self.encoder
        head_was_training = self.head.training
        self.head.eval()
        if self.embeddings is not None:
            from ..cache import cached_dense

            src = next(i for i, s in enumerate(self.sources) if s.name.startswith("beir:"))
            docs = self.embeddings[src][:len(self.sources[src].segments[0])].numpy()
            doc_ids = list(data.corpus)
            queries = cached_dense(enc, [data.queries[q] for q in data.queries], cache_dir=self.cfg.cache_dir,
                                   show_progress_bar=False)
        else:
            rel = list(dict.fromkeys(d for r in data.qrels.values() for d in r))
            others = [d for d in data.corpus if d not in set(rel)]
            rng = np.random.default_rng([self.cfg.seed, 7])
            pick = rng.choice(len(others), size=min(len(others), max(0, self.cfg.eval_max_docs - len(rel))),
                              replace=False)
            doc_ids = rel + [others[i] for i in sorted(pick)]
            was_training = enc.backbone.training
            enc.backbone.eval()
            docs = enc.encode_dense([data.doc_text(d) for d in doc_ids], batch_size=32)
            queries = enc.encode_dense([data.queries[q] for q in data.queries], batch_size=32)
            enc.backbone.train(was_training)
        dcodes, qcodes = enc.sparsify(docs, k=k), enc.sparsify(queries, k=k)
        run = rank(qcodes.dot(dcodes), list(data.queries), doc_ids, positive_only=True)
        self.head.train(head_was_training)
        return retrieval_metrics(run, data.qrels)["ndcg@10"]

    # -- loop ----------------------------------------------------------------------------------------------
    def fit(self) -> CSREncoder:
        """Train the remaining epochs (checkpointing each), then write the model directory."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.head.train()
        if cfg.finetune_backbone:
            self.encoder.backbone.train()
        try:
            while self.epoch < cfg.epochs:
                self._run_epoch(self.epoch, tqdm)
                self.epoch += 1
                self._save()
        except torch.OutOfMemoryError:
            raise TrainConfigError(f"out of memory at --batch-size {cfg.batch_size}: lower it") from None
        return self._finish()

    def _run_epoch(self, epoch: int, tqdm) -> None:
        cfg, plan = self.cfg, self.plans[epoch]
        torch.manual_seed(cfg.seed * 100003 + epoch)  # dropout when finetuning
        sums: dict[str, float] = {}
        fired = torch.zeros(self.h, dtype=torch.bool)
        start, k = time.time(), cfg.k
        bar = tqdm(plan, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not self.progress,
                   leave=False)
        for batch in bar:
            k = annealed_k(self.step, self.total_steps, cfg.k_init, cfg.k, cfg.anneal_frac)
            x = self._inputs(batch)
            terms, z = self.losses(x, batch, k)
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            self.optimizer.step()
            with torch.no_grad():
                now = (z > 0).any(dim=0).cpu()
                fired |= now
                self.steps_since = torch.where(now, torch.zeros_like(self.steps_since), self.steps_since + 1)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            if not math.isfinite(sums["loss"]):
                raise CSRAdapterError(f"loss became {sums['loss']} at step {self.step}: lower --lr")
            self.step += 1
            bar.set_postfix(loss=f"{float(terms['loss'].detach()):.4f}", k=k)
        bar.close()
        n = max(1, len(plan))
        entry = EpochLog(epoch + 1, len(plan), k, *(sums.get(t, 0.0) / n for t in
                                                    ("loss", "recon", "recon4k", "aux", "contrastive")),
                         100.0 * float((~fired).float().mean()), time.time() - start)
        entry.heldout_ndcg10 = self.heldout_ndcg()
        self.history.append(entry)
        if entry.heldout_ndcg10 is not None and cfg.select_best and (
                self.best is None or entry.heldout_ndcg10 > self.best[0]):
            self.best = (entry.heldout_ndcg10, epoch + 1)
            self._save_best()
        self.echo(format_epoch(entry, cfg.epochs))

    def _save_best(self) -> None:
        from safetensors.torch import save_file

        folder = self.out / ckpt.CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.head.state_dict().items()}
        if self.cfg.finetune_backbone:
            tensors.update({f"backbone.{k}": v.detach().cpu().contiguous().clone()
                            for k, v in self.encoder.backbone.model.state_dict().items()})
        save_file(tensors, str(folder / "best.tmp"))
        (folder / "best.tmp").replace(folder / "best.safetensors")

    def _finish(self) -> CSREncoder:
        from safetensors.torch import load_file

        best_file = self.out / ckpt.CHECKPOINT_DIR / "best.safetensors"
        chosen = self.cfg.epochs
        if self.cfg.select_best and self.best and best_file.exists() and self.best[1] != self.cfg.epochs:
            tensors = load_file(str(best_file))
            self.head.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("backbone.")})
            if self.cfg.finetune_backbone:
                self.encoder.backbone.model.load_state_dict(
                    {k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")})
            chosen = self.best[1]
        self.head.eval()
        self.encoder.backbone.eval().requires_grad_(False)
        conf = self.encoder.config
        conf.training = {
            "method": "CSRv2" if self.cfg.k_init > self.cfg.k else "CSR",
            "data": "; ".join(s.description for s in self.sources),
            "backbone_finetuned": self.cfg.finetune_backbone,
            "epochs_trained": self.epoch, "kept_epoch": chosen, "steps": self.step,
            "settings": {k: v for k, v in self.cfg.to_dict().items() if k not in ("device", "threads", "cache_dir")},
            "history": [asdict(h) for h in self.history],
        }
        if self.budget is not None:
            self.budget.calibrate(self.head, self.sources, self.embeddings).store(conf)
        self.encoder._model_id = None
        self.encoder.save_pretrained(self.out, save_backbone=self.cfg.finetune_backbone)
        if self.cfg.finetune_backbone:  # reload: the backbone's identity becomes its saved weights' hash,
            self.encoder = CSREncoder.from_pretrained(self.out, device=str(self.device))  # so caches can't mix
        return self.encoder


def format_epoch(e: EpochLog, epochs: int) -> str:
    held = f" heldout_ndcg@10={e.heldout_ndcg10:.4f}" if e.heldout_ndcg10 is not None else ""
    return (f"epoch {e.epoch}/{epochs}: loss={e.loss:.4f} recon={e.recon:.4f} recon4k={e.recon4k:.4f} "
            f"aux={e.aux:.4f} contrastive={e.contrastive:.4f} k={e.k} dead={e.dead_pct:.1f}%{held} "
            f"({e.steps} steps, {e.seconds:.1f}s)")


def train(sources: list[Source], cfg: TrainConfig, out: str | Path, heldout: BeirData | None = None,
          resume: bool = False, progress: bool = True, echo: Callable[[str], None] | None = None) -> CSREncoder:
    """Train and save a model directory at ``out``; returns the trained encoder."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return Trainer(sources, cfg, out, heldout, resume, progress, echo).fit()

