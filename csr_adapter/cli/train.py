"""`csr-adapter train` and `csr-adapter eval`."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from ..defaults import DEFAULT_K, EVAL_KS, check_k
from .options import INT_LIMIT, Float, Int, device_option, json_option, model_option, runtime_option, threads_option
from .safe import printable

KINDS = ("auto", "beir", "pairs", "labelled", "raw")


def _parse_ks(value: str) -> list[int]:
    try:
        ks = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint="--k") from None
    if not ks or any(k < 1 or k > INT_LIMIT for k in ks):
        raise click.BadParameter(f"every k must be in [1, {INT_LIMIT}], got {value[:40]!r}", param_hint="--k")
    return ks


def _score_rows(rows: list[dict]) -> list[dict]:
    return [{"k": r["k"], "nDCG@10": r["ndcg@10"], "Recall@100": r["recall@100"],
             "mean active dims": r["mean_active"], "dead latents %": r.get("dead_pct", 0.0)} for r in rows]


@click.command()
@click.argument("data", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output model directory.")
@click.option("--kind", type=click.Choice(KINDS), default="auto", show_default=True,
              help="Data layout of every DATA (auto-detected by default).")
@click.option("--k", type=Int(), default=DEFAULT_K, show_default=True, help="Target active latents per code.")
@click.option("--h", type=Int(), default=None, help="Latents (default 4 x backbone dim).")
@click.option("--k-init", type=Int(), default=64, show_default=True, help="k at step 0 (annealed down to --k).")
@click.option("--anneal-frac", type=Float(), default=0.7, show_default=True,
              help="Fraction of steps over which k falls (0 = no annealing).")
@click.option("--epochs", type=Int(), default=20, show_default=True,
              help="Epochs (frozen SciFact: 20 beat 5 and 10 on held-out train queries).")
@click.option("--batch-size", type=Int(), default=256, show_default=True)
@click.option("--lr", type=Float(), default=1e-3, show_default=True, help="Head learning rate.")
@click.option("--backbone-lr", type=Float(), default=2e-5, show_default=True,
              help="Backbone learning rate (with --finetune-backbone).")
@click.option("--contrastive-weight", type=Float(), default=0.1, show_default=True)
@click.option("--extra-k", "extra_ks", type=Int(), multiple=True,
              help="Also train codes at this k (repeatable), e.g. --extra-k 2 --extra-k 4 so one head serves low k.")
@click.option("--temperature", type=Float(), default=0.1, show_default=True)
@click.option("--aux-weight", type=Float(), default=1 / 32, show_default=True)
@click.option("--k-aux", type=Int(), default=512, show_default=True)
@click.option("--dead-window", type=Int(), default=50, show_default=True,
              help="Steps without firing after which a latent is dead (AuxK).")
@click.option("--recon4k-weight", type=Float(), default=0.125, show_default=True)
@click.option("--holdout-frac", type=Float(), default=0.0, show_default=True,
              help="Share of BEIR train queries held out: per-epoch nDCG@10, best epoch kept.")
@click.option("--finetune-backbone", is_flag=True, help="Train the backbone end to end (slow on CPU).")
@click.option("--backbone", default=None, help="Backbone (default: stock all-MiniLM-L6-v2) or local dir.")
@click.option("--max-seq-length", type=Int(), default=None)
@click.option("--seed", type=Int(), default=0, show_default=True)
@click.option("--init-from", type=click.Path(file_okay=False), default=None,
              help="Start the head from this model directory (e.g. frozen-trained, before --finetune-backbone).")
@click.option("--budget", type=click.Choice(["fixed", "pooled"]), default="fixed", show_default=True,
              help="pooled: top B*k over each batch (per role) with [k-min, k-max] per item; serves with a "
                   "calibrated threshold (SeqTopK/BatchTopK).")
@click.option("--k-min", type=Int(), default=None, help="Pooled: fewest active dims per item (default max(1, k/2)).")
@click.option("--k-max", type=Int(), default=None, help="Pooled: most active dims per item (default 4k).")
@click.option("--threshold-frac", type=Float(), default=0.1, show_default=True,
              help="Pooled: final share of steps trained in threshold mode (as served).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out from its last checkpoint.")
@click.option("--eval-data", type=click.Path(file_okay=False), default=None,
              help="BEIR folder to evaluate after training; scores go into the model card.")
@click.option("--eval-split", default="test", show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Embedding cache folder.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@device_option
@threads_option
def train(data: tuple[str, ...], out: str, kind: str, eval_data: str | None, eval_split: str,
          no_progress: bool, resume: bool, **settings) -> None:
    """Train a CSRv2 head on DATA (BEIR folders, pairs/labelled JSONL, raw corpora; mixable)."""
    from ..training.beir import load_beir
    from ..training.data import load_source
    from ..training.evaluate import evaluate_beir
    from ..training.trainer import TrainConfig, Trainer

    settings["extra_ks"] = list(settings.get("extra_ks") or [])
    cfg = TrainConfig(**settings)
    if eval_data:
        load_beir(eval_data, split=eval_split)  # bad eval data fails before training, not after
    sources, heldout = [], None
    for path in data:
        src, held = load_source(path, kind, cfg.holdout_frac, cfg.seed)
        sources.append(src)
        heldout = heldout or held
    trainer = Trainer(sources, cfg, out, heldout=heldout, resume=resume, progress=not no_progress,
                      echo=lambda m: click.echo(m, err=True))
    enc = trainer.fit()
    command = "csr-adapter " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    enc.config.training["command"] = command
    scores = {}
    if heldout is not None:
        rows = [{"k": k, "ndcg@10": trainer.heldout_ndcg(k), "recall@100": float("nan"), "mean_active": float(k)}
                for k in sorted({2, 4, cfg.k, 16, 32})]
        scores["held-out train queries, nDCG@10"] = {
            "rows": [{"k": r["k"], "nDCG@10": r["ndcg@10"]} for r in rows], "command": command}
    if eval_data:
        rows = evaluate_beir(enc, load_beir(eval_data, split=eval_split), ks=sorted({2, 4, cfg.k, 16, 32}),
                             cache_dir=cfg.cache_dir, show_progress_bar=not no_progress)
        scores[f"{Path(eval_data).name} {eval_split}"] = {
            "rows": _score_rows(rows),
            "command": f"csr-adapter eval --data {shlex.quote(eval_data)} --model {shlex.quote(out)} "
                       f"--split {eval_split}"}
    enc.config.scores = scores
    enc.save_pretrained(out, save_backbone=cfg.finetune_backbone)
    click.echo(f"wrote {printable(out)}", err=True)


def _format_rows(rows: list[dict]) -> list[str]:
    head = f"{'k':>6} {'nDCG@10':>8} {'R@100':>7} {'active':>7} {'dead%':>6} {'sum p^2':>8} {'longest':>8}"
    lines = [head]
    for r in rows:
        if r["k"] == "dense":
            lines.append(f"{'dense':>6} {r['ndcg@10']:8.4f} {r['recall@100']:7.4f} {r['mean_active']:7.0f}"
                         f" {'-':>6} {'-':>8} {'-':>8}")
        elif isinstance(r["k"], str):  # bm25, and codes fused with it
            lines.append(f"{r['k']:>6} {r['ndcg@10']:8.4f} {r['recall@100']:7.4f} {'-':>7} {'-':>6} {'-':>8} {'-':>8}")
        else:
            lines.append(f"{r['k']:>6} {r['ndcg@10']:8.4f} {r['recall@100']:7.4f} {r['mean_active']:7.2f}"
                         f" {r['dead_pct']:6.1f} {r['posting_sum_p2']:8.5f} {r['longest_list']:>8}")
    return lines


@click.command("eval")
@click.option("--data", "data", required=True, type=click.Path(file_okay=False), help="BEIR folder.")
@model_option
@click.option("--k", "ks", default=None,
              help=f"Comma-separated k values [default: {','.join(map(str, EVAL_KS))}; threshold: the calibrated k].")
@click.option("--split", default="test", show_default=True, help="qrels split to evaluate.")
@click.option("--budget", type=click.Choice(["fixed", "threshold", "corpus"]), default="fixed", show_default=True,
              help="fixed: top-k per text; threshold: calibrated θ (pooled models); corpus: N*k postings over "
                   "the corpus.")
@click.option("--no-dense", is_flag=True, help="Skip the dense backbone reference row.")
@click.option("--no-lexical", is_flag=True,
              help="Skip the BM25 row and the codes fused with it per k (search's default fused mode).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Embedding cache folder.")
@click.option("--adapt", "adapt", is_flag=True,
              help="Also adapt the model to the corpus text (never its queries or qrels), as ingest does, "
                   "and report its rows beside the model's.")
@click.option("--adapt-steps", type=Int(min=1), default=None, help="Most adaptation steps.")
@device_option
@runtime_option
@threads_option
@json_option
def eval_cmd(data: str, model: str | None, ks: str | None, split: str, budget: str, no_dense: bool,
             no_lexical: bool, cache_dir: str | None, adapt: bool, adapt_steps: int | None, device: str, runtime: str,
             threads: int, as_json: bool) -> None:
    """nDCG@10, Recall@100, active dims, dead latents and posting-list skew on a BEIR split, per k.

    With --adapt, a head is first adapted on the corpus text alone (its chunks, cut as ingest cuts them),
    exactly what `ingest` would store for this corpus, and scored beside the model."""
    from ..budget import eval_ks, format_active
    from ..training.beir import load_beir
    from ..training.evaluate import evaluate_beir
    from .options import load_encoder

    requested = _parse_ks(ks) if ks else None  # a bad --k fails before anything loads
    enc = load_encoder(model, device, threads, runtime)
    adapted = None
    if adapt:  # before the queries are even read: adaptation sees the corpus file only
        from ..collection import adapt_to_corpus
        from ..corpus import read_corpus
        from ..training.beir import corpus_file
        from .ingest import adapt_settings

        adapted, summary = adapt_to_corpus(enc, read_corpus(corpus_file(data)), config=adapt_settings(adapt_steps),
                                           force=True, progress=not as_json,
                                           echo=lambda m: click.echo(m, err=True))
    beir = load_beir(data, split=split)
    k_list = eval_ks(enc, budget, requested)
    for one in k_list:
        try:
            check_k(one, enc.h)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--k") from None
    fine_tuned = enc.backbone.identity != "all-MiniLM-L6-v2"
    rows = evaluate_beir(enc, beir, ks=k_list, dense=not no_dense, cache_dir=cache_dir,
                         show_progress_bar=not as_json, budget=budget)
    result = {"data": str(data), "split": split, "model": model or "default", "model_id": enc.model_id,
              "budget": budget, "queries": len(beir.qrels), "docs": len(beir.corpus), "rows": rows}
    if adapted is not None or (not no_lexical and budget == "fixed"):
        from ..training.evaluate import embed_beir, evaluate_lexical, evaluate_sparse

        docs, queries = embed_beir(enc, beir, cache_dir, show_progress_bar=False)
    lexical = not no_lexical and budget == "fixed"
    if lexical:  # BM25 and each k's codes fused with it, as search's default mode ranks them
        result["lexical_rows"] = evaluate_lexical(enc, docs, queries, beir, k_list)
    if adapted is not None:
        result["adapted"] = {"model_id": adapted.model_id, "adapt": summary,
                             "rows": evaluate_sparse(adapted, docs, queries, beir, k_list)}
        if lexical:
            result["adapted"]["lexical_rows"] = evaluate_lexical(adapted, docs, queries, beir, k_list)[1:]
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{Path(data).name} {split}: {len(beir.qrels)} queries, {len(beir.corpus)} docs, "
               f"model {result['model']} ({enc.model_id}{', finetuned backbone' if fine_tuned else ''})")
    for line in _format_rows(rows + result.get("lexical_rows", [])) + format_active(rows, budget):
        click.echo(line)
    if adapted is not None:
        click.echo(f"adapted to the corpus text ({summary['chunks']} chunks, {summary['seconds']:.1f} s; "
                   f"model {adapted.model_id}, what ingest would store):")
        for line in _format_rows(result["adapted"]["rows"] + result["adapted"].get("lexical_rows", []))[1:]:
            click.echo(line)
