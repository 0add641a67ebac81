"""Encode throughput: bare backbone vs CSR ``encode_documents`` per backbone runtime, same documents, same process.

Baselines: sentence-transformers' ``SentenceTransformer.encode`` on the same model directory and our
own ``encode_dense`` (backbone only, torch). CSR ``encode_documents`` runs once per runtime (torch, onnx,
onnx-int8; see ``csr_adapter/onnx_backbone.py``). Runs are interleaved over several rounds and the best
round of each is kept, so background load hits all of them alike. Goals: CSR encode (torch) >= 0.95x the
bare backbone; the best runtime >= 2.0x torch and >= 1.0x FastEmbed. FastEmbed (``--fastembed-python``: the
Python of a venv with ``fastembed`` installed; it conflicts with this project's ``huggingface_hub``) runs in a
subprocess (``_fastembed_worker.py``) on the backbone's own fp32 ONNX file and tokenizer, interleaved with the
other rows; its dense vectors are only timed.

    python benchmarks/encode.py [--docs 1000] [--rounds 3] [--k 8] [--threads 0]
                                [--runtimes torch,torch-bf16,onnx,onnx-int8] [--fastembed-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import scifact_docs, write_result


class FastEmbedRun:
    """FastEmbed in its own venv, one encode pass of ``texts`` per call (seconds measured inside the worker)."""

    def __init__(self, python: str, enc, texts: list[str], threads: int, batch_size: int) -> None:
        from csr_adapter.onnx_backbone import model_file

        self.dir = Path(tempfile.mkdtemp(prefix="fastembed-"))
        bb = Path(enc.backbone.path)
        os.symlink(model_file(enc.backbone, "onnx"), self.dir / "model.onnx")
        for name in ("tokenizer.json", "config.json", "special_tokens_map.json"):
            shutil.copy(bb / name, self.dir / name)
        tok_cfg = json.loads((bb / "tokenizer_config.json").read_text())
        tok_cfg["model_max_length"] = enc.backbone.max_seq_length  # what sentence-transformers and we cut at
        (self.dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
        (self.dir / "texts.json").write_text(json.dumps(texts))
        worker = Path(__file__).with_name("_fastembed_worker.py")
        self.proc = subprocess.Popen(
            [python, str(worker), str(self.dir / "texts.json"), str(self.dir), str(threads), str(batch_size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)})
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the FastEmbed worker did not start (see its error above)")

    def __call__(self) -> float:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline().split()[0])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runtimes", default="torch,torch-bf16,onnx,onnx-int8")
    ap.add_argument("--fastembed-python", default=None, help="Python of a venv with fastembed (adds its row)")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer
    from tqdm import tqdm

    from csr_adapter import CSREncoder
    from csr_adapter.runtime import set_threads

    threads = set_threads(args.threads)
    _, texts = scifact_docs(args.docs)
    enc = CSREncoder.from_pretrained(device=args.device)
    st = SentenceTransformer(str(enc.backbone.path), device=str(enc.device))
    runtimes = [r for r in args.runtimes.split(",") if r != "torch"]
    others = {r: CSREncoder.from_pretrained(device="cpu", runtime=r) for r in runtimes}
    runs = {
        "sentence_transformers_encode": lambda: st.encode(texts, batch_size=args.batch_size),
        "backbone_encode_dense": lambda: enc.encode_dense(texts, batch_size=args.batch_size),
        "csr_encode_documents": lambda: enc.encode_documents(texts, k=args.k, batch_size=args.batch_size),
    }
    for r, other in others.items():
        runs[f"csr_encode_documents[{r}]"] = (
            lambda other=other: other.encode_documents(texts, k=args.k, batch_size=args.batch_size))
    for other in (enc, *others.values()):
        other.encode_documents(texts[:64], k=args.k)  # warm-up (and the ONNX export, once per machine)
    fastembed = None
    if args.fastembed_python:
        fastembed = FastEmbedRun(args.fastembed_python, enc, texts, threads, args.batch_size)
        runs["fastembed_encode"] = fastembed
    best = {name: float("inf") for name in runs}
    with tqdm(total=args.rounds * len(runs), desc="encode bench") as bar:
        for _ in range(args.rounds):
            for name, fn in runs.items():
                start = time.perf_counter()
                inner = fn()
                seconds = inner if name == "fastembed_encode" else time.perf_counter() - start
                best[name] = min(best[name], seconds)
                bar.update()
    if fastembed is not None:
        fastembed.close()
    docs_per_s = {name: len(texts) / sec for name, sec in best.items()}
    torch_csr = docs_per_s["csr_encode_documents"]
    ratio_st = torch_csr / docs_per_s["sentence_transformers_encode"]
    ratio_bb = torch_csr / docs_per_s["backbone_encode_dense"]
    vs_torch = {r: docs_per_s[f"csr_encode_documents[{r}]"] / torch_csr for r in others}
    vs_st = {r: docs_per_s[f"csr_encode_documents[{r}]"] / docs_per_s["sentence_transformers_encode"]
             for r in others}
    best_rt = max(vs_torch, key=vs_torch.get) if vs_torch else "torch"
    vs_fe = ({r: docs_per_s[f"csr_encode_documents[{r}]"] / docs_per_s["fastembed_encode"] for r in others}
             if fastembed is not None else {})
    result = {
        "docs": len(texts), "k": args.k, "batch_size": args.batch_size, "threads": threads,
        "device": str(enc.device), "rounds": args.rounds, "best_seconds": best, "docs_per_s": docs_per_s,
        "ratio_csr_vs_sentence_transformers": ratio_st, "ratio_csr_vs_backbone": ratio_bb,
        "ratio_runtime_vs_torch": vs_torch, "ratio_runtime_vs_sentence_transformers": vs_st,
        "ratio_runtime_vs_fastembed": vs_fe,
        "goal": "csr_encode_documents >= 0.95x bare backbone; best runtime >= 2.0x torch and >= 1.0x FastEmbed",
        "goal_met": (min(ratio_st, ratio_bb) >= 0.95 and vs_torch.get(best_rt, 1.0) >= 2.0
                     and (not vs_fe or max(vs_fe.values()) >= 1.0)),
    }
    md = ["# Encode throughput (SciFact documents)", "", f"`{' '.join(['python benchmarks/encode.py', *sys.argv[1:]])}`"
          f" — {result['docs']} docs, k={args.k}, batch {args.batch_size}, {threads} threads, device {enc.device}; "
          f"best of {args.rounds} interleaved rounds, one process.", "",
          "| run | runtime | docs/s | vs CSR torch |", "|---|---|---|---|"]
    for name, v in docs_per_s.items():
        runtime = (name.split("[")[1].rstrip("]") if "[" in name
                   else "onnx (FastEmbed)" if name == "fastembed_encode" else "torch")
        md.append(f"| {name.split('[')[0]} | {runtime} | {v:.1f} | {v / torch_csr:.2f}x |")
    md += ["", f"CSR / sentence-transformers: **{ratio_st:.3f}x**; CSR / our backbone: **{ratio_bb:.3f}x** "
           f"(goal >= 0.95x)."]
    if vs_torch:
        md.append("Runtimes vs torch: " + ", ".join(f"{r} **{v:.2f}x**" for r, v in vs_torch.items())
                  + " (goal: best >= 2.0x); vs sentence-transformers (torch): "
                  + ", ".join(f"{r} {v:.2f}x" for r, v in vs_st.items()) + ".")
    if vs_fe:
        md.append("Runtimes vs FastEmbed (goal: best >= 1.0x): "
                  + ", ".join(f"{r} **{v:.2f}x**" for r, v in vs_fe.items()) + ".")
    md += [f"Load average at the end: {[round(x, 2) for x in os.getloadavg()]} (shared 2-core box).", ""]
    path = write_result("encode", result, "\n".join(md))
    print("\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
