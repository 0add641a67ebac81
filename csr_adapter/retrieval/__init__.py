"""Retrieval: the one query pipeline (:class:`Searcher`) over a collection's engine and its dense fallback."""

from .searcher import MODES, Answer, FallbackSearcher, Query, Searcher, group_by_document, rrf

__all__ = ["MODES", "Answer", "FallbackSearcher", "Query", "Searcher", "group_by_document", "rrf"]
