"""Read a BEIR-layout folder: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv."""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import CSRAdapterError


@dataclass
class BeirData:
    corpus: dict[str, dict]          # doc id -> {"title", "text"}
    queries: dict[str, str]          # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: graded relevance}

    def doc_text(self, doc_id: str) -> str:
        doc = self.corpus[doc_id]
        title = doc.get("title") or ""
        return f"{title}. {doc.get('text', '')}".strip(". ") if title else doc.get("text", "")


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    raise CSRAdapterError(f"{folder}: no {stem}.jsonl or {stem}.jsonl.gz (not a BEIR folder)")


def corpus_file(folder: str | Path) -> Path:
    """A BEIR folder's ``corpus.jsonl`` or ``corpus.jsonl.gz``."""
    return _find(Path(folder), "corpus")


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise CSRAdapterError(f"{path}:{n}: not JSON ({exc.msg})") from None
    return rows


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.exists():
        raise CSRAdapterError(f"{path}: qrels file missing")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = {"query-id", "corpus-id", "score"} - set(reader.fieldnames or [])
        if missing:
            raise CSRAdapterError(f"{path}: no {', '.join(sorted(missing))} column (header: query-id, corpus-id, "
                                  "score)")
        for n, row in enumerate(reader, 2):
            try:
                score = int(row["score"])
            except (TypeError, ValueError):
                raise CSRAdapterError(f"{path}:{n}: score {row['score']!r} is not an integer") from None
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = score
    return qrels


def is_beir_dir(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any((folder / n).exists() for n in ("corpus.jsonl", "corpus.jsonl.gz"))


def load_beir(folder: str | Path, split: str = "test") -> BeirData:
    """Load a BEIR folder; ``qrels`` holds only ``split`` and ``queries`` only the judged ones."""
    folder = Path(folder)
    corpus = {str(d["_id"]): d for d in read_jsonl(_find(folder, "corpus"))}
    all_queries = {str(q["_id"]): q["text"] for q in read_jsonl(_find(folder, "queries"))}
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    unknown = [q for q in qrels if q not in all_queries] + [d for r in qrels.values() for d in r if d not in corpus]
    if unknown:
        raise CSRAdapterError(f"{folder}: qrels/{split}.tsv names {len(unknown)} unknown ids, e.g. {unknown[0]!r}")
    return BeirData(corpus, {q: all_queries[q] for q in qrels}, qrels)
