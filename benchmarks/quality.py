"""SciFact quality benchmark: dense vs CSR vs CSRv2 vs sentence-transformers' SparseEncoder CSR.

    python benchmarks/quality.py [--data ../shared/data] [--ks 2,4,8,16,32] [--finetune-minutes 0]

Every trained row uses the same data (SciFact corpus + SciFact *train* qrels + Banking77 *train*), the
same frozen all-MiniLM-L6-v2 embeddings (shared on-disk cache) and seed 0; each is scored on the SciFact
*test* split, which no row trains or selects on. Trained rows get one head per target k (as the CSR /
CSRv2 papers do), plus the in-domain one head serving every k and the shipped default (zero-shot here).
Finished cells are cached under benchmarks/.cache/quality/, so an interrupted run resumes.
Writes benchmarks/results/quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache" / "quality"
RESULTS = ROOT / "benchmarks" / "results"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from csr_adapter.encoder import CSREncoder  # noqa: E402
from csr_adapter.runtime import set_threads  # noqa: E402
from csr_adapter.training.beir import BeirData, load_beir  # noqa: E402
from csr_adapter.training.data import as_pairs, load_source, unlabelled  # noqa: E402
from csr_adapter.training.evaluate import (  # noqa: E402
    embed_beir,
    evaluate_sparse,
    rank,
    retrieval_metrics,
)
from csr_adapter.training.trainer import TrainConfig, train  # noqa: E402

SEED = 0
# CSRv2 frozen settings = the in-domain SciFact head's (the shipped default before the broad one; h=1536,
# 20 epochs, extra k 2/4, chosen on a 20% hold-out of SciFact train queries); CSR = same minus annealing/SupCon
CSRV2 = dict(k_init=64, anneal_frac=0.7, epochs=20, batch_size=256, lr=1e-3, contrastive_weight=0.1,
             temperature=0.1)
CSR = dict(CSRV2, k_init=None, anneal_frac=0.0)
INDOMAIN = "CSRv2 frozen, in-domain SciFact head, one head for all k"
SHIPPED = "shipped default (broad text; SciFact unseen: zero-shot)"
ST_EPOCHS, ST_BATCH, ST_LR = 10, 64, 4e-5


def _cell(name: str) -> Path:
    return CACHE / "cells" / f"{name}.json"


def cached(name: str, fn):
    """Run ``fn()`` once; its JSON result is kept so a re-run skips it."""
    path = _cell(name)
    if path.exists():
        return json.loads(path.read_text())
    t = time.time()
    result = fn()
    result["seconds"] = round(time.time() - t, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    print(f"  {name}: {json.dumps({k: v for k, v in result.items() if k != 'per_k'})[:200]}", flush=True)
    return result


# -- rows -----------------------------------------------------------------------------------------------
def dense_rows(docs: np.ndarray, queries: np.ndarray, test: BeirData) -> list[dict]:
    out = []
    for dims in (384, 64, 32, 16, 8):
        d, q = docs[:, :dims], queries[:, :dims]
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        m = retrieval_metrics(rank(q @ d.T, list(test.queries), list(test.corpus)), test.qrels)
        name = "dense (full 384-d)" if dims == 384 else f"dense truncated to {dims} dims"
        out.append({"row": name, "dims": dims, "bytes_per_vector": 4 * dims, **m})
    return out


def sources(data: Path, method: str):
    beir = load_source(data / "scifact", "beir", seed=SEED)[0]
    bank = load_source(data / "banking77" / "train.jsonl.gz", "labelled")[0]
    if method == "CSR":  # InfoNCE on (query, relevant doc) pairs; Banking77 texts for reconstruction only
        return [as_pairs(beir), unlabelled(bank)]
    return [beir, bank]


def trained_row(method: str, k: int, data: Path, docs, queries, test: BeirData, extra: dict | None = None) -> dict:
    settings = dict(CSRV2 if method == "CSRv2" else CSR)
    settings.update(extra or {})
    if settings.get("k_init") is None:
        settings["k_init"] = k
    cfg = TrainConfig(k=k, h=1536, seed=SEED, device="cpu", threads=1, **settings)
    out = CACHE / "models" / f"{method}-k{k}"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    enc = train(sources(data, method), cfg, out, progress=False, echo=lambda m: None)
    row = evaluate_sparse(enc, docs, queries, test, ks=[k])[0]
    return {**row, "history_last": enc.config.training["history"][-1], "settings": cfg.to_dict()}


def indomain_rows(data: Path, docs, queries, test: BeirData, ks) -> dict:
    """The in-domain SciFact head: one head for every k (CSRV2 + extra k 2/4, k=8), the shipped default
    before the broad one (its recipe, chosen on a 20% hold-out of SciFact train queries)."""
    cfg = TrainConfig(k=8, h=1536, seed=SEED, device="cpu", threads=1, extra_ks=[2, 4], dead_window=50, **CSRV2)
    enc = train(sources(data, "CSRv2"), cfg, CACHE / "models" / "indomain", progress=False, echo=lambda m: None)
    return {"per_k": evaluate_sparse(enc, docs, queries, test, ks=ks), "model_id": enc.model_id,
            "settings": cfg.to_dict()}


def default_head_rows(docs, queries, test: BeirData, ks) -> dict:
    enc = CSREncoder.from_pretrained(device="cpu")
    return {"per_k": evaluate_sparse(enc, docs, queries, test, ks=ks), "model_id": enc.model_id,
            "settings": enc.config.training.get("settings", {})}


# -- sentence-transformers' SparseEncoder CSR (the incumbent), on the same frozen embeddings -----------------
class _CachedBackbone(torch.nn.Module):
    """Stands in for the frozen Transformer+Pooling: text -> its cached MiniLM embedding (same numbers)."""

    def __init__(self, texts: list[str], table: np.ndarray) -> None:
        super().__init__()
        self.index = {t: i for i, t in enumerate(texts)}
        self.table = torch.from_numpy(table).float()

    def forward(self, features: dict) -> dict:
        features["sentence_embedding"] = self.table[features["ids"]]
        return features


def st_row(k: int, data: Path, docs, queries, test: BeirData) -> dict:
    """sentence-transformers SparseAutoEncoder + CSRLoss (defaults: beta 0.1, gamma 1, SparseMNRL) on the
    SciFact train (query, relevant doc) pairs; our top-k/cosine scoring on its codes."""
    from sentence_transformers.sparse_encoder.losses import CSRLoss
    from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder

    from csr_adapter.cache import cached_dense

    src = as_pairs(load_source(data / "scifact", "beir", seed=SEED)[0])
    texts = src.texts
    enc = CSREncoder.from_backbone(device="cpu")
    table = np.concatenate([cached_dense(enc, seg, show_progress_bar=False) for seg in src.segments])
    torch.manual_seed(SEED)
    sae = SparseAutoEncoder(input_dim=384, hidden_dim=1536, k=k, k_aux=512)
    model = torch.nn.Sequential(_CachedBackbone(texts, table), sae)
    loss_fn = CSRLoss(model=model)
    opt = torch.optim.Adam(sae.parameters(), lr=ST_LR)
    rng = np.random.default_rng(SEED)
    pairs = np.asarray(src.pairs)
    model.train()
    for _ in range(ST_EPOCHS):
        order = rng.permutation(len(pairs))
        for s in range(0, len(order), ST_BATCH):
            batch = pairs[order[s:s + ST_BATCH]]
            feats = [{"ids": torch.from_numpy(batch[:, 0])}, {"ids": torch.from_numpy(batch[:, 1])}]
            loss = sum(loss_fn(feats).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    sae.eval()
    # score its codes exactly like ours: top-k of its pre-activations, ReLU, L2-normalised, dot product
    from csr_adapter.head import CSRHead

    head = CSRHead(384, 1536)
    head.load_state_dict({"W": sae.encoder.weight.detach().clone(), "b_pre": sae.pre_bias.detach().clone(),
                          "b_lat": sae.latent_bias.detach().clone()})
    wrapped = CSREncoder(enc.backbone, head, enc.config, device="cpu")
    row = evaluate_sparse(wrapped, docs, queries, test, ks=[k])[0]  # cosine of codes (how we serve)
    wrapped.config.normalize = False  # its native scoring: dot product of raw codes
    native = evaluate_sparse(wrapped, docs, queries, test, ks=[k])[0]
    best = native if native["ndcg@10"] > row["ndcg@10"] else row
    return {**best, "scoring": "dot" if best is native else "cosine", "ndcg@10_cosine": row["ndcg@10"],
            "ndcg@10_dot": native["ndcg@10"]}


# -- CSRv2 with backbone finetuning (optional on CPU) --------------------------------------------------------
def finetuned_row(k: int, data: Path, test: BeirData, minutes: float, warm: Path | None = None,
                  extra_ks: tuple[int, ...] = (), name: str = "") -> dict:
    """End-to-end finetuning on SciFact train pairs within a CPU time budget, then a full test eval.

    Stage 1 is a frozen CSRv2 head (already annealed to k): ``warm``, by default the per-k frozen head."""
    warm = warm or CACHE / "models" / f"CSRv2-k{k}"
    cfg = TrainConfig(k=k, h=1536, seed=SEED, device="cpu", threads=0, finetune_backbone=True, epochs=1,
                      batch_size=32, lr=1e-4, backbone_lr=2e-5, k_init=k, fill_frac=0.0, max_seq_length=256,
                      init_from=str(warm), extra_ks=list(extra_ks))
    src = load_source(data / "scifact", "beir", seed=SEED)[0]
    src.fill = []  # queries + relevant docs only: the corpus pass is what a CPU cannot afford
    out = CACHE / "models" / (name or f"CSRv2-finetuned-k{k}")
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    t = time.time()
    enc = train([src], cfg, out, progress=True, echo=print)
    took = (time.time() - t) / 60
    docs, queries = embed_beir(enc, test, cache_dir=CACHE / "ft-embeddings")
    rows = evaluate_sparse(enc, docs, queries, test, ks=[2, 4, 8, 16, 32])
    return {"per_k": rows, "train_minutes": round(took, 1), "budget_minutes": minutes}


# -- report ------------------------------------------------------------------------------------------------
def render_md(result: dict) -> str:
    ks = result["ks"]
    lines = ["# SciFact test quality (nDCG@10)", "",
             f"Backbone all-MiniLM-L6-v2, h = 1536, seed {SEED}. Data for every trained row: SciFact corpus + "
             "SciFact train qrels + Banking77 train (test splits never used for training or selection). "
             f"Command: `{result['command']}`. Machine: {result['machine']}.", "",
             "## Dense backbone", "", "| row | dims | bytes/vector | nDCG@10 | Recall@100 |", "|---|---|---|---|---|"]
    for r in result["dense"]:
        lines.append(f"| {r['row']} | {r['dims']} | {r['bytes_per_vector']} | {r['ndcg@10']:.4f} | "
                     f"{r['recall@100']:.4f} |")
    lines += ["", "## Sparse codes: nDCG@10 at k (dead latents % over the corpus codes in parentheses)", "",
              "| row | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for name, per_k in result["sparse"].items():
        if isinstance(per_k, str):
            lines.append(f"| {name} | " + " | ".join([per_k] + [""] * (len(ks) - 1)) + " |")
            continue
        cells = []
        for k in ks:
            r = per_k.get(str(k))
            cells.append(f"{r['ndcg@10']:.4f} ({r['dead_pct']:.0f}%)" if r else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Recall@100 per cell and every setting are in quality.json.", ""]
    lines += ["## Targets (issue 3)", ""] + [f"- {t}" for t in result["targets"]] + [""]
    if result.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def targets(sparse: dict) -> list[str]:
    def get(row: str, k: int):
        per_k = sparse.get(row)
        return None if not isinstance(per_k, dict) or str(k) not in per_k else per_k[str(k)]["ndcg@10"]

    def line(label: str, value, goal: float) -> str:
        if value is None:
            return f"{label} >= {goal}: not measured"
        return f"{label} >= {goal}: measured {value:.4f} -> {'met' if value >= goal else 'MISSED'}"

    v2, ft, csr = "CSRv2 frozen (head per k)", "CSRv2 finetuned backbone", "CSR frozen (head per k)"
    out = [line("CSRv2 frozen k=2", get(v2, 2), 0.50), line("CSRv2 frozen k=8", get(v2, 8), 0.62),
           line("CSRv2 frozen k=32", get(v2, 32), 0.70), line("CSRv2 finetuned k=2", get(ft, 2), 0.52),
           line("CSRv2 finetuned k=4", get(ft, 4), 0.60), line("CSRv2 finetuned k=8", get(ft, 8), 0.66),
           line("CSRv2 finetuned k=32", get(ft, 32), 0.72)]
    ft2 = "CSRv2 finetuned backbone, one head for all k (warm start: in-domain one head)"
    for label, value, goal in ((f"{ft2} k=2", get(ft2, 2), 0.52), (f"{ft2} k=4", get(ft2, 4), 0.60),
                               (f"{ft2} k=8", get(ft2, 8), 0.66), (f"{ft2} k=32", get(ft2, 32), 0.72)):
        if value is not None:
            out.append(line(label, value, goal))
    for row in (v2, INDOMAIN, ft, ft2):
        per_k = sparse.get(row)
        if isinstance(per_k, dict) and "8" in per_k:
            dead = per_k["8"]["dead_pct"]
            out.append(f"dead latents at k=8 <= 20% ({row}): measured {dead:.1f}% -> "
                       f"{'met' if dead <= 20 else 'MISSED'}")
    a, b = get(v2, 2), get(csr, 2)
    if a is not None and b:
        out.append(f"CSRv2 k=2 >= 1.4 x CSR k=2: {a:.4f} vs 1.4 x {b:.4f} = {1.4 * b:.4f} -> "
                   f"{'met' if a >= 1.4 * b else 'MISSED'}")
    st = sparse.get("sentence-transformers SparseEncoder CSR (head per k)")
    if isinstance(st, dict):
        mine = (v2, ft, ft2, INDOMAIN)
        rows = [r for r in mine if isinstance(sparse.get(r), dict)]
        ahead = all(sparse[r][kk]["ndcg@10"] > st[kk]["ndcg@10"] for r in rows for kk in st if kk in sparse[r])
        out.append(f"every CSRv2 row ahead of the sentence-transformers row: {'met' if ahead else 'MISSED'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SciFact quality benchmark")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--ks", default="2,4,8,16,32")
    parser.add_argument("--finetune-minutes", type=float, default=0.0,
                        help="Run the CSRv2 finetuned row (k=8) if > 0 (CPU: ~45 min); a cached result is "
                             "always reported.")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    test = load_beir(args.data / "scifact", split="test")
    base = CSREncoder.from_backbone(device="cpu")
    docs, queries = embed_beir(base, test)
    print("dense rows", flush=True)
    result = {"command": "python benchmarks/quality.py" + (f" --finetune-minutes {args.finetune_minutes:g}"
                                                           if args.finetune_minutes else ""),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, no GPU",
              "ks": ks, "dense": dense_rows(docs, queries, test), "sparse": {}, "notes": []}
    sparse = result["sparse"]
    for method, label in (("CSR", "CSR frozen (head per k)"), ("CSRv2", "CSRv2 frozen (head per k)")):
        sparse[label] = {}
        for k in ks:
            print(f"{method} k={k}", flush=True)
            sparse[label][str(k)] = cached(f"{method}-k{k}", lambda m=method, k=k: trained_row(
                m, k, args.data, docs, queries, test))
    label = "sentence-transformers SparseEncoder CSR (head per k)"
    sparse[label] = {}
    for k in ks:
        print(f"sentence-transformers k={k}", flush=True)
        sparse[label][str(k)] = cached(f"st-k{k}", lambda k=k: st_row(k, args.data, docs, queries, test))
    shipped = CSREncoder.from_pretrained(device="cpu").model_id
    default = cached(f"default-head-{shipped}", lambda: default_head_rows(docs, queries, test, ks))
    sparse[SHIPPED] = {str(r["k"]): r for r in default["per_k"]}
    indomain = cached("indomain-onehead", lambda: indomain_rows(args.data, docs, queries, test, ks))
    sparse[INDOMAIN] = {str(r["k"]): r for r in indomain["per_k"]}
    ft_label = "CSRv2 finetuned backbone"
    if args.finetune_minutes > 0 or _cell("CSRv2-finetuned-k8").exists():
        ft = cached("CSRv2-finetuned-k8", lambda: finetuned_row(8, args.data, test, args.finetune_minutes))
        sparse[ft_label] = {str(r["k"]): r for r in ft["per_k"]}
        result["notes"].append(f"finetuned row: warm start from the frozen CSRv2 k=8 head, then 1 epoch of "
                               f"end-to-end finetuning (backbone lr 2e-5, head lr 1e-4) over SciFact train "
                               f"queries + relevant docs only, read at every k; {ft['train_minutes']} min on CPU")
    else:
        sparse[ft_label] = "not run: needs `--finetune-minutes N` (CPU-only machine; see notes)"
    ft2_label = "CSRv2 finetuned backbone, one head for all k (warm start: in-domain one head)"
    if args.finetune_minutes > 0 or _cell("CSRv2-finetuned-default").exists():
        ft2 = cached("CSRv2-finetuned-default", lambda: finetuned_row(
            8, args.data, test, args.finetune_minutes, warm=CACHE / "models" / "indomain", extra_ks=(2, 4),
            name="CSRv2-finetuned-default"))
        sparse[ft2_label] = {str(r["k"]): r for r in ft2["per_k"]}
        result["notes"].append(f"second finetuned row: warm start from the in-domain one head, the same "
                               f"1-epoch recipe plus its low-k terms (extra_ks 2, 4); {ft2['train_minutes']} "
                               "min on CPU. Both finetuned recipes were fixed before seeing their test scores; "
                               "no finetuning setting was selected on a held-out split (no CPU time for it).")
    result["targets"] = targets(sparse)
    result["notes"] += [
        "CSR row: no k-annealing (k_init = k), InfoNCE on SciFact (query, relevant doc) pairs, Banking77 "
        "texts for reconstruction only (no supervised contrastive); otherwise the CSRv2 settings.",
        "CSRv2 rows: k annealed 64 -> k over the first 70% of steps, supervised contrastive (a query and "
        "its relevant docs share a label; Banking77 intents are labels), AuxK, 20 epochs.",
        f"sentence-transformers row: its SparseAutoEncoder (h=1536, k_aux=512, dead_threshold 30) and CSRLoss "
        f"defaults (beta 0.1, gamma 1, SparseMultipleNegativesRankingLoss) on the same SciFact train pairs, "
        f"{ST_EPOCHS} epochs, batch {ST_BATCH}, Adam lr {ST_LR}; the frozen backbone is replaced by the cached "
        "embeddings (identical numbers); its codes are read with top-k + ReLU like ours.",
        "Dense truncation: first n dims, re-normalised (MiniLM is not Matryoshka-trained).",
        "Finetuning on this CPU-only machine is bounded to one epoch (~55 steps of batch 32) over SciFact train "
        "queries + relevant docs, without the corpus reconstruction stream; both finetuned rows score BELOW "
        "their frozen warm starts (e.g. k=8 0.673 vs 0.694, and 0.661 vs 0.681), so this run does not show the "
        "finetuning gain CSRv2 reports; a GPU run with the full recipe (several epochs, corpus in the batches, "
        "held-out selection of the backbone lr) is the open item. A held-out check agrees (20% of SciFact "
        "train queries held out in both stages, 1,500-doc corpus sample, k=8 nDCG@10): frozen stage-1 head "
        "0.778; after the 1-epoch finetune with backbone lr 2e-5 0.757, with 5e-6 0.774.",
        "The issue quotes the incumbent at k=2 0.307 / k=8 0.571; our re-run of sentence-transformers' CSR on "
        "919 SciFact train pairs is far lower (0.097 / 0.275): with this little data its head collapses "
        "(dead latents rise with training) unless the learning rate is tiny.",
        "Dead latents are counted over the SciFact corpus codes; latents that serve Banking77 intents are "
        "'dead' on SciFact. The same trainer on SciFact alone (`csr-adapter train ../shared/data/scifact "
        "--out m --k 8`, 5 epochs) leaves 5.3% dead at k=8 (nDCG@10 0.663).",
        "sentence-transformers settings: the best of lr {4e-5, 1e-4, 1e-3} x epochs {10, 50} tried at k=8 "
        "(nDCG@10 0.275 / 0.242 / 0.147 at 10 epochs; 50 epochs collapse to ~97% dead latents); picked on "
        "the test split, which can only flatter the incumbent. Its codes are scored both by cosine and by "
        "its native raw dot product; the better is reported.",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (RESULTS / "quality.md").write_text(render_md(result))
    print(render_md(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
