"""Offline RAG with LangChain: examples/corpus -> CSR sparse retrieval (+ FAISS fallback) -> prompt -> chat model.

    python examples/rag_langchain.py ["your question"] [--store DIR] [--limit N]

Ingests examples/corpus (SciFact abstracts) once into an embedded Qdrant Edge collection plus its
FAISS fallback (re-runs add nothing), then answers with a LangChain chain. The chat model is a small
local extractive model (no network, no weights): it answers with the context sentences that share
most words with the question. Swap in any LangChain chat model (ChatOllama, ChatOpenAI, ...) as ``llm``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import SimpleChatModel
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from csr_adapter import open_collection
from csr_adapter.integrations.langchain import CSRRetriever

CORPUS = Path(__file__).resolve().parent / "corpus"
PROMPT = ChatPromptTemplate.from_messages([
    ("system", "Answer the question from the context only. Cite sources in brackets."),
    ("human", "Context:\n{context}\n\nQuestion: {question}"),
])
WORD = re.compile(r"[a-z0-9]+")


class ExtractiveChatModel(SimpleChatModel):
    """A local stand-in for an LLM: returns the context sentences that overlap the question most."""

    sentences: int = 2

    @property
    def _llm_type(self) -> str:
        return "extractive-demo"

    def _call(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
              **kwargs: Any) -> str:
        text = str(messages[-1].content)
        context, _, question = text.partition("\n\nQuestion: ")
        context = context.removeprefix("Context:\n")
        asked = set(WORD.findall(question.lower())) - {"the", "of", "a", "does", "do", "is", "to", "in", "and"}
        scored = []
        for block in context.split("\n\n"):
            source, _, body = block.partition("] ")
            for sentence in re.split(r"(?<=[.!?])\s+", body):
                overlap = len(asked & set(WORD.findall(sentence.lower())))
                scored.append((overlap, sentence.strip(), source.lstrip("[")))
        best = sorted(scored, key=lambda t: -t[0])[: self.sentences]
        if not best or best[0][0] == 0:
            return "The retrieved context does not answer this."
        return " ".join(f"{s} [{src}]" for _, s, src in best)


def format_docs(docs) -> str:
    return "\n\n".join(f"[{Path(d.metadata['source']).name}] {' '.join(d.page_content.split())}" for d in docs)


def build_index(store: Path, limit: int | None):
    """Ingest the example corpus (idempotent) into a collection (Qdrant Edge + FAISS fallback, a head adapted
    to the corpus); return a LangChain retriever over it and the collection."""
    corpus_dir = CORPUS
    if limit:  # a smaller demo: copy the first N files into a folder of their own
        corpus_dir = store / f"corpus-{limit}"
        corpus_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(CORPUS.glob("*.txt"))[:limit]:
            if not (corpus_dir / f.name).exists():
                (corpus_dir / f.name).write_bytes(f.read_bytes())
    col = open_collection("rag", path=store / "store")
    report = col.ingest(corpus_dir, with_fallback=True, progress=True)
    print(f"index: {report.points} chunks ({report.written} written now) in {store}")
    return CSRRetriever(searcher=col.searcher(), k=4), col


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("question", nargs="?", default="Does vitamin D supplementation reduce the risk of fractures?")
    ap.add_argument("--store", default=".csr-adapter/rag-example", help="Index directory.")
    ap.add_argument("--limit", type=int, default=0, help="Index only the first N files (0 = all 300).")
    args = ap.parse_args()

    retriever, index = build_index(Path(args.store), args.limit or None)
    llm = ExtractiveChatModel()
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | PROMPT | llm | StrOutputParser()
    print(f"\nQ: {args.question}\nA: {chain.invoke(args.question)}\n\nsources:")
    for doc in retriever.invoke(args.question):
        m = doc.metadata
        print(f"  {m['score']:.3f} [{m['served_by']}] {Path(m['source']).name} chunk {m['chunk']}")
    index.close()


if __name__ == "__main__":
    main()
