"""Helpers shared by the benchmark scripts: paths, data, result writing, machine facts."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("CSR_ADAPTER_DATA", REPO.parent / "shared" / "data"))
SCIFACT = DATA / "scifact"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def machine() -> dict:
    import torch

    return {"python": sys.version.split()[0], "platform": platform.platform(), "cores": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_result(name: str, data: dict, markdown: str | None = None) -> Path:
    """Write ``benchmarks/results/<name>.json`` (and ``.md``) with the command and machine facts."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"command": "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    if markdown:
        (RESULTS / f"{name}.md").write_text(markdown)
    return path


def scifact_docs(limit: int | None = None) -> tuple[list[str], list[str]]:
    """SciFact doc ids and texts (title + abstract), in corpus order."""
    sys.path.insert(0, str(REPO))
    from csr_adapter.training.beir import load_beir

    data = load_beir(SCIFACT, split="test")
    ids = list(data.corpus)[:limit]
    return ids, [data.doc_text(i) for i in ids]
