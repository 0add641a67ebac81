"""Retrain the shipped default head: ``python -m csr_adapter.training.default_model --data DIR --out DIR``.

Stock all-MiniLM-L6-v2 backbone, frozen (the default stays general-purpose); data: SciFact corpus +
SciFact *train* qrels + Banking77 *train*. No test split is read for training or model selection; the
SciFact test split is only evaluated afterwards and its scores are written into the model card.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from ..config import CSRConfig
from ..encoder import CSREncoder
from .beir import load_beir
from .data import load_source
from .evaluate import evaluate_beir
from .trainer import TrainConfig, train

COMMAND = "make default-model"
# chosen on a 20% hold-out of SciFact train queries (see benchmarks/results/quality.md)
DEFAULT_SETTINGS = dict(k=8, h=1536, k_init=64, epochs=5, batch_size=256, lr=1e-3, seed=0)


def build(data: Path, out: Path, threads: int = 0, progress: bool = True, **overrides) -> CSREncoder:
    """Train on ``data`` (the shared data folder) and write the model directory ``out``."""
    settings = DEFAULT_SETTINGS | overrides
    cfg = TrainConfig(**settings, device="cpu", threads=threads)
    sources = [load_source(data / "scifact", "beir", seed=cfg.seed)[0],
               load_source(data / "banking77" / "train.jsonl.gz", "labelled")[0]]
    work = Path(tempfile.mkdtemp(prefix="csr-default-"))
    try:
        enc = train(sources, cfg, work, progress=progress, echo=print)
        rows = evaluate_beir(enc, load_beir(data / "scifact", split="test"), ks=(2, 4, 8, 16, 32),
                             show_progress_bar=progress)
        enc.config.scores = {"SciFact test (BEIR), nDCG@10 / Recall@100": {
            "rows": [{"k": r["k"], "nDCG@10": r["ndcg@10"], "Recall@100": r["recall@100"],
                      "mean active dims": r["mean_active"], "dead latents %": r.get("dead_pct", 0.0)}
                     for r in rows],
            "command": COMMAND + "   # eval only: csr-adapter eval --data ../shared/data/scifact --split test",
        }}
        enc.config.training["command"] = COMMAND
        if out.exists():
            for name in ("config.json", "head.safetensors", "README.md"):
                (out / name).unlink(missing_ok=True)
        enc.save_pretrained(out, save_backbone=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    CSRConfig.load(out)  # sanity: the written directory loads
    return enc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder (scifact/, banking77/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    enc = build(args.data, args.out, args.threads, not args.no_progress)
    for dataset, result in enc.config.scores.items():
        print(dataset)
        for row in result["rows"]:
            print("  " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
