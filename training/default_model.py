"""Retrain the shipped default head: ``python -m csr_adapter.training.default_model --data DIR --out DIR``.

A general-purpose head: stock all-MiniLM-L6-v2 backbone, frozen; trained from scratch on broad, shippable
text from many fields (:mod:`csr_adapter.training.broad`: WordNet, FOLDOC, the Jargon File, VERA,
Banking77) with the CSRv2 recipe (k annealed 64 -> 8, reconstruction at k and 4k, AuxK, one head for
k = 2..32) plus similarity distillation and asymmetric query codes (:mod:`csr_adapter.training.adapt`).
No retrieval set's text is trained on; the zero-shot table on all six (SciFact, MED, CACM, TIME, ADI, LISA)
is written into the model card.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from ..config import CSRConfig
from ..encoder import CSREncoder
from ..head import CSRHead
from .adapt import AdaptConfig, adapt_head
from .broad import BROAD_SETS, EVAL_SETS, broad_texts
from .zeroshot import KS, set_rows, share_table

COMMAND = "make default-model"
# Chosen on the dev sets (SciFact *train* queries, MED, ADI, TIME; see benchmarks/results/default_dev.md);
# CACM, LISA and SciFact *test* were not looked at while choosing.
H = 1536
DEFAULT_SETTINGS = dict(init="scratch", k=8, extra_ks=[2, 4, 16, 32], query_k=64, query_code_weight=1.0,
                        epochs=8.0, min_steps=300, max_steps=4000, max_samples=400_000, seed=0)
DEV_SETS = ("scifact-train", "med", "adi", "time")
SELECTION = ("settings chosen on dev sets (SciFact train queries, MED, ADI, TIME); CACM, LISA and SciFact test "
             "untouched while choosing")


def embed_sets(encoder: CSREncoder, data: Path, names=None, progress: bool = True) -> dict[str, np.ndarray]:
    """Backbone vectors of every broad set, through the persistent per-text store (resumable)."""
    from ..dense_store import DenseStore

    texts = broad_texts(data, names)
    out = {}
    with DenseStore(encoder, encoder.config.document_prefix) as store:
        for name, rows in texts.items():
            out[name] = store.encode(rows, batch_size=64, progress=progress, desc=name)
    return out


def train_head(encoder: CSREncoder, data: Path, h: int = H, names=None, progress: bool = True,
               **overrides) -> CSREncoder:
    """A new encoder (same backbone) whose head is trained from scratch on the broad sets."""
    vectors = embed_sets(encoder, data, names, progress)
    cfg = AdaptConfig(**(DEFAULT_SETTINGS | overrides))
    x = np.concatenate(list(vectors.values()))
    head, report = adapt_head(CSRHead(encoder.d, h), x, cfg, progress=progress, device=encoder.device)
    specs = {s.name: s for s in BROAD_SETS}
    sets = [{"name": n, "what": specs[n].what, "rows": len(v), "licence": specs[n].licence, "path": specs[n].path}
            for n, v in vectors.items()]
    config = CSRConfig.from_dict(encoder.config.to_dict())
    config.h, config.k, config.query_k, config.scores = h, cfg.k, cfg.query_k, {}
    config.training = {
        "method": "CSRv2 (frozen backbone) + similarity distillation, trained from scratch",
        "data": "; ".join(f"{s['name']} ({s['rows']:,} texts, {s['licence']})" for s in sets),
        "sets": sets, "not_trained_on": list(EVAL_SETS) + ["gcide (GPL-2+)", "20newsgroups (no licence stated)"],
        "backbone_finetuned": False, "settings": cfg.to_dict(), "report": report.to_dict(),
        "command": COMMAND, "selection": SELECTION,
    }
    return CSREncoder(encoder.backbone, head, config, device=str(encoder.device))


def zeroshot_scores(encoder: CSREncoder, data: Path, sets=EVAL_SETS, progress: bool = False) -> dict:
    """The card's table: every set is unseen by this head (its text was never trained on)."""
    rows = {name: set_rows(encoder, data, name, KS, progress) for name in sets}
    return {"rows": rows, "table": share_table(rows, KS)}


def build(data: Path, out: Path, threads: int = 0, progress: bool = True, **overrides) -> CSREncoder:
    """Train on ``data`` (the shared data folder), score zero-shot, and write the model directory ``out``."""
    from ..runtime import set_threads

    set_threads(threads)
    start = time.perf_counter()
    base = CSREncoder.from_pretrained(device="cpu")
    enc = train_head(base, data, progress=progress, **overrides)
    scores = zeroshot_scores(enc, data, progress=progress)
    enc.config.scores = {"zero-shot nDCG@10 (no text of these sets was trained on)": {
        "rows": [{"set": n, "dense": r["dense"], **{f"k={k}": r["codes"][k]["ndcg@10"] for k in KS}}
                 for n, r in scores["rows"].items()],
        "command": COMMAND}}
    enc.config.training["card"] = ("## Zero-shot quality (nDCG@10, % of dense MiniLM)\n\n"
                                   + "\n".join(scores["table"]) + "\n")
    enc.config.training["seconds"] = round(time.perf_counter() - start)
    enc.save_pretrained(out, save_backbone=False)  # per-file atomic replace: readers never see a gap
    CSRConfig.load(out)  # sanity: the written directory loads
    return enc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    enc = build(args.data, args.out, args.threads, not args.no_progress)
    print(enc.config.training["card"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
