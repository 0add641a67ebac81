"""BM25 term weights as a sparse vector: the lexical vector stored beside the CSR codes.

A document's vector holds, per distinct term, the BM25 term-frequency part
``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl))`` (k1 1.5, b 0.75: bm25s's defaults, which scored above
k1 1.2 on the development sets); a query's vector holds each distinct term's count in the query.
The engine applies IDF (Qdrant's ``Modifier.IDF``: ``ln(1 + (N - n + 0.5) / (n + 0.5))``) from the collection's
own statistics at query time, so adding documents never re-weights stored ones, and the dot product of the
two vectors is the document's BM25 score. ``avgdl`` is the average length of the chunks of the collection's
first ingest, recorded in its metadata and fixed afterwards.

Terms are what bm25s 0.3 (the reference implementation) makes with its English defaults: lowercase words
of two or more word characters, Lucene's 33 English stop words dropped, Snowball English stems (PyStemmer).
A term's index is ``abs(murmur3_32(stem))``, the id FastEmbed's ``Qdrant/bm25`` gives the same stem, so a
FastEmbed BM25 query vector (1.0 per term; it drops a longer stop-word list) finds the same stored terms.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .errors import CSRAdapterError
from .sparse import SparseEmbedding

TOKENIZER = "bm25-en-1"  # the term rules below; recorded in a collection's metadata
DIM = 2**31  # term ids lie in [0, 2^31)
MAX_TERM_CHARS = 40  # longer tokens (hashes, base64 runs) are not words
_WORD = re.compile(r"(?u)\b\w\w+\b")
# Lucene's English stop set (what bm25s uses for "en")
STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of",
    "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will",
    "with"))


class LexicalError(CSRAdapterError, ValueError):
    """Lexical settings that cannot work (one-line message)."""


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer: the Snowball stemmers' C implementation

    return Stemmer.Stemmer("english")


def terms(text: str) -> list[str]:
    """The text's terms in order (stems; stop words and over-long tokens dropped)."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) <= MAX_TERM_CHARS]
    return _stemmer().stemWords(words) if words else []


@lru_cache(maxsize=1 << 16)
def term_id(term: str) -> int:
    """``abs(murmur3_32(term))`` as FastEmbed's BM25 computes it (the one value 2^31 folds to 2^31 - 1)."""
    import mmh3

    return min(abs(mmh3.hash(term)), DIM - 1)


def _vector(weights: dict[int, float]) -> SparseEmbedding:
    idx = np.fromiter(weights.keys(), dtype=np.int64, count=len(weights))
    order = np.argsort(idx)
    val = np.fromiter(weights.values(), dtype=np.float32, count=len(weights))
    return SparseEmbedding(idx[order].astype(np.int32), val[order], DIM)


def _check(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise LexicalError(f"lexical {name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class BM25:
    """BM25 document and query vectors for one collection (``avgdl``: its average chunk length in terms)."""

    avgdl: float
    k1: float = 1.5
    b: float = 0.75
    tokenizer: str = TOKENIZER

    def __post_init__(self) -> None:
        _check("avgdl", self.avgdl, 1e-6, 1e9)
        _check("k1", self.k1, 0.0, 100.0)
        _check("b", self.b, 0.0, 1.0)
        if self.tokenizer != TOKENIZER:
            raise LexicalError(f"lexical tokenizer {self.tokenizer!r} is not known to this version "
                               f"(it has {TOKENIZER!r}): upgrade csr-adapter, or recreate the collection")

    @classmethod
    def fit(cls, texts: Sequence[str], **params: Any) -> BM25:
        """Parameters for a collection of ``texts`` (their average length in terms; 1 when all are empty)."""
        lengths = [len(terms(t)) for t in texts]
        avg = float(np.mean(lengths)) if lengths else 0.0
        return cls(avgdl=avg if avg > 0 else 1.0, **params)

    def to_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "k1": self.k1, "b": self.b, "avgdl": round(self.avgdl, 4)}

    @classmethod
    def from_dict(cls, data: Any) -> BM25:
        if not isinstance(data, dict):
            raise LexicalError(f"lexical settings must be a mapping, got {type(data).__name__}")
        known = {"tokenizer", "k1", "b", "avgdl"}
        return cls(**{key: value for key, value in data.items() if key in known})

    def document(self, text: str) -> SparseEmbedding:
        """The BM25 term-frequency weights of one document (empty when it has no terms)."""
        words = terms(text)
        norm = self.k1 * (1.0 - self.b + self.b * len(words) / self.avgdl)
        counts = Counter(term_id(w) for w in words)
        return _vector({t: n * (self.k1 + 1.0) / (n + norm) for t, n in counts.items()})

    def documents(self, texts: Sequence[str]) -> list[SparseEmbedding]:
        return [self.document(t) for t in texts]


def query_vector(text: str) -> SparseEmbedding:
    """A query's lexical vector: each distinct term weighted by how often the query says it (the engine's IDF
    weighs them), as bm25s and Lucene score a repeated query term. FastEmbed's BM25 queries use 1.0 per term; that
    scored 0.05 and 0.09 below bm25s on CACM and LISA, whose queries are long requests."""
    return _vector({t: float(n) for t, n in Counter(term_id(w) for w in terms(text)).items()})
