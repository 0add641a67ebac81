"""The broad, shippable training text of the default head (``../shared/data``), with licences.

Only sets whose licence allows shipping weights trained on them are listed. Left out on purpose:
GCIDE (GPL-2+), 20 Newsgroups (no licence stated), SciFact (kept unseen, so its test score is zero-shot),
and MED / CACM / TIME / ADI / LISA (evaluation only).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BroadSet:
    """One training set: where its text is, which field of each row, and its licence."""

    name: str
    path: str           # relative to the data folder
    fields: tuple[str, ...]
    licence: str
    what: str


BROAD_SETS: tuple[BroadSet, ...] = (
    BroadSet("wordnet", "wordnet/texts.jsonl.gz", ("text",), "WordNet 3.0 licence (permissive, notice kept)",
             "WordNet 3.0 glosses with examples"),
    BroadSet("wordnet-lemmas", "wordnet/pairs.jsonl.gz", ("query",), "WordNet 3.0 licence (permissive, notice kept)",
             "WordNet 3.0 synset lemma names (short, query-like)"),
    BroadSet("foldoc", "foldoc/texts.jsonl.gz", ("text",), "GFDL 1.1+", "FOLDOC computing dictionary entries"),
    BroadSet("jargon", "jargon/texts.jsonl.gz", ("text",), "public domain", "The Jargon File 4.4.7 entries"),
    BroadSet("vera", "vera/pairs.jsonl.gz", ("query", "positive"), "GFDL 1.1+",
             "V.E.R.A. computing acronyms and expansions"),
    BroadSet("banking77", "banking77/train.jsonl.gz", ("text",), "CC BY 4.0", "Banking77 train split (intents)"),
)
# Retrieval sets never trained on by the shipped head (their whole text: corpus and queries).
EVAL_SETS: tuple[str, ...] = ("scifact", "med", "cacm", "time", "adi", "lisa")
MAX_CHARS = 2000  # long entries are cut: the backbone reads 256 tokens anyway


def read_jsonl_gz(path: Path) -> Iterable[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def set_texts(data: Path, spec: BroadSet) -> list[str]:
    """Distinct non-empty texts of one set, in file order."""
    out: dict[str, None] = {}
    for row in read_jsonl_gz(Path(data) / spec.path):
        for name in spec.fields:
            text = " ".join(str(row.get(name) or "").split())[:MAX_CHARS]
            if text:
                out.setdefault(text)
    return list(out)


def broad_texts(data: Path, names: Iterable[str] | None = None) -> dict[str, list[str]]:
    """``{set name: texts}`` for the named broad sets (all by default)."""
    wanted = set(names) if names is not None else {s.name for s in BROAD_SETS}
    unknown = wanted - {s.name for s in BROAD_SETS}
    if unknown:
        raise ValueError(f"unknown training sets {sorted(unknown)}; known: {[s.name for s in BROAD_SETS]}")
    return {s.name: set_texts(data, s) for s in BROAD_SETS if s.name in wanted}


def text_hash(text: str) -> str:
    """Content hash of a text after whitespace normalisation and lower-casing (overlap checks)."""
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8", "surrogatepass")).hexdigest()[:20]


def eval_texts(data: Path, name: str) -> list[str]:
    """Every text of a retrieval set: corpus titles, bodies, title+body, and queries."""
    folder = Path(data) / name
    out = []
    for row in read_jsonl_gz(folder / "corpus.jsonl.gz"):
        title, body = str(row.get("title") or ""), str(row.get("text") or "")
        out += [t for t in (title, body, f"{title} {body}".strip()) if t.strip()]
    out += [str(r.get("text") or "") for r in read_jsonl_gz(folder / "queries.jsonl.gz")]
    return [t for t in out if t.strip()]
