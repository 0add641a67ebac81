"""Adaptation time at 1M chunks: the bound (``max_samples`` rows sampled, at most ``max_steps`` steps) holds.

The 1M rows are the real MiniLM embeddings of every corpus in ../shared/data (about 21k documents, through
the embedding cache) repeated with small Gaussian noise, so latents fire as on real text.

    python benchmarks/adapt_scale.py --rows 1000000     # -> benchmarks/results/adapt_scale.{json,md}
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _common import DATA, REPO, write_result

sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from csr_adapter import CSREncoder
    from csr_adapter.runtime import set_threads
    from csr_adapter.training.adapt import AdaptConfig
    from csr_adapter.training.beir import load_beir
    from csr_adapter.training.evaluate import embed_beir

    set_threads(args.threads)
    enc = CSREncoder.from_pretrained(device="cpu")
    base = np.concatenate([embed_beir(enc, load_beir(DATA / name, "test"), show_progress_bar=False)[0]
                           for name in ("scifact", "med", "cacm", "time", "adi", "lisa")])
    rng = np.random.default_rng(0)
    rows = base[rng.integers(len(base), size=args.rows)]
    rows += rng.normal(scale=0.01, size=rows.shape).astype(np.float32)
    groups = np.arange(args.rows) // 2  # pairs of "chunks" share a document
    cfg = AdaptConfig()
    t0 = time.perf_counter()
    adapted = enc.adapt(dense=rows, groups=groups, config=cfg, progress=True)
    seconds = time.perf_counter() - t0
    rep = adapted.config.training["adapt_report"]
    data = {"rows": args.rows, "distinct_base_rows": len(base), "seconds": seconds, "report": rep,
            "config": cfg.to_dict()}
    md = (f"# Adaptation time at {args.rows:,} chunks\n\n"
          f"Command: `python benchmarks/adapt_scale.py --rows {args.rows}` ({args.threads} threads).\n\n"
          f"{rep['sampled']:,} rows sampled (cap {cfg.max_samples:,}), {rep['steps']} steps "
          f"(cap {cfg.max_steps}): **{seconds:.0f} s** in all (goal: <= 600 s on 2 cores). Reconstruction error "
          f"{rep['recon_before']:.3f} -> {rep['recon_after']:.3f}.\n")
    write_result("adapt_scale", data, md)
    print(md)


if __name__ == "__main__":
    main()
