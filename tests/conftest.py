"""Shared fixtures: the real MiniLM backbone and the shipped model, loaded once per session."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "CSR_ADAPTER_CACHE" not in os.environ:  # the dense-vector store and embedding cache: per test run
    import tempfile

    os.environ["CSR_ADAPTER_CACHE"] = tempfile.mkdtemp(prefix="csr-adapter-test-cache-")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CSR_ADAPTER_DATA", REPO.parent / "shared" / "data"))
SCIFACT = SHARED_DATA / "scifact"
BANKING77 = SHARED_DATA / "banking77"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    import torch

    from csr_adapter.runtime import available_cores

    torch.set_num_threads(min(2, available_cores()))  # a pinned run (taskset -c 0) gets one thread


@pytest.fixture(scope="session")
def encoder():
    """The shipped default model (real backbone + trained head). Do not mutate it in tests."""
    from csr_adapter import CSREncoder

    return CSREncoder.from_pretrained(device="cpu")


@pytest.fixture(scope="session")
def scifact_slice():
    """A small real SciFact slice: 40 test queries, their relevant docs, plus 200 other docs."""
    from csr_adapter.training.beir import load_beir

    if not SCIFACT.exists():
        pytest.fail(f"shared data not found at {SCIFACT}; set CSR_ADAPTER_DATA")
    data = load_beir(SCIFACT, split="test")
    qids = sorted(data.qrels)[:40]
    rel = sorted({d for q in qids for d in data.qrels[q]})
    others = [d for d in sorted(data.corpus) if d not in set(rel)][:200]
    doc_ids = rel + others
    return {
        "queries": {q: data.queries[q] for q in qids},
        "qrels": {q: data.qrels[q] for q in qids},
        "docs": {d: data.doc_text(d) for d in doc_ids},
    }


@pytest.fixture(scope="session")
def scifact_dense(encoder, scifact_slice):
    """The real backbone's vectors (document prefix) of every ``scifact_slice`` doc, rows in its ``docs``
    order: one backbone pass over the slice per session, through the run's dense cache (``cached_dense``),
    so every test that ranks or indexes the slice reads these rows instead of encoding it again. Do not
    mutate it (not flagged read-only: torch warns on non-writable arrays)."""
    from csr_adapter.cache import cached_dense

    texts = list(scifact_slice["docs"].values())
    return cached_dense(encoder, texts, prefix=encoder.config.document_prefix, show_progress_bar=False)


@pytest.fixture(scope="session")
def small_docs(scifact_slice) -> dict[str, str]:
    """30 real SciFact docs (doc id -> text, the slice's first 30), each cut to its first 600 characters:
    the shared corpus of the framework-integration tests (LangChain, LlamaIndex, Haystack), whose point is
    the wiring, not long inputs; shorter texts keep their many real encodes cheap."""
    return {d: t[:600] for d, t in list(scifact_slice["docs"].items())[:30]}


@pytest.fixture(scope="module")
def shared_integration_encoder(encoder):
    """Framework objects built with no model (CSREmbeddings(), CSRSparseTextEmbedder(), ...) reuse the
    session's model instead of loading it again; the registry is emptied when the module ends."""
    from csr_adapter.integrations import encoders

    for device in ("auto", "cpu"):
        encoders._ENCODERS[(None, device)] = encoder
    yield encoder
    encoders._ENCODERS.clear()


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> Path:
    """A real SciFact slice in BEIR layout for the training tests (test_training, test_budget): 40 train
    queries, 24 test queries, 72 docs (their relevant docs and 16 others). Embedding it is most of those
    tests' time, so they share it and its vectors (``tiny_beir_cache``); a short train still lifts nDCG@10
    at k=8 from 0.43 to 0.75 on it (test_training asks for +0.05)."""
    import csv
    import json

    from csr_adapter.training.beir import load_beir

    def write_jsonl(path: Path, rows: list) -> None:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    full_train, full_test = load_beir(SCIFACT, "train"), load_beir(SCIFACT, "test")
    train_q = sorted(full_train.qrels)[:40]
    test_q = sorted(full_test.qrels)[:24]
    rel = {d for q in train_q for d in full_train.qrels[q]} | {d for q in test_q for d in full_test.qrels[q]}
    others = [d for d in full_train.corpus if d not in rel][:16]
    docs = [d for d in full_train.corpus if d in rel] + others
    root = tmp_path_factory.mktemp("tiny_beir")
    write_jsonl(root / "corpus.jsonl", [{"_id": d, **{k: full_train.corpus[d][k] for k in ("title", "text")}}
                                        for d in docs])
    queries = {**{q: full_train.queries[q] for q in train_q}, **{q: full_test.queries[q] for q in test_q}}
    write_jsonl(root / "queries.jsonl", [{"_id": q, "text": t} for q, t in queries.items()])
    (root / "qrels").mkdir()
    for split, data, qids in (("train", full_train, train_q), ("test", full_test, test_q)):
        with open(root / "qrels" / f"{split}.tsv", "w", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["query-id", "corpus-id", "score"])
            for q in qids:
                for d, g in data.qrels[q].items():
                    w.writerow([q, d, g])
    return root


@pytest.fixture(scope="session")
def tiny_beir_cache(tmp_path_factory) -> str:
    """The embedding cache (``--cache-dir``) for ``tiny_beir``: its backbone vectors are computed once."""
    return str(tmp_path_factory.mktemp("tiny_beir_cache"))


@pytest.fixture(scope="session")
def untrained_encoder():
    """Real backbone + a freshly initialised head (seed 0): for shape and round-trip tests."""
    from csr_adapter import CSREncoder

    return CSREncoder.from_backbone(k=8, device="cpu", seed=0)


@pytest.fixture(scope="session")
def readme_snippets():
    """``snippets(heading)``: the ```python blocks of the README section ``## heading``, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")

    def snippets(heading: str) -> list[str]:
        section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
        return re.findall(r"```python\n(.*?)```", section, flags=re.S)

    return snippets
