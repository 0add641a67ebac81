"""csr-adapter's Python API in one page: encode, index (Qdrant Edge + FAISS fallback), search.

    python examples/quickstart.py [--store DIR]

Runs offline on CPU: the shipped model (MiniLM backbone + CSR head), the SciFact abstracts in
examples/corpus (``--docs``; from about 150 documents, 300 chunks, ingest adapts a head to them), an
embedded Qdrant Edge shard for the sparse codes and a FAISS index of the backbone vectors as the
fallback, both in one id space.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from csr_adapter import CSREncoder, open_collection

CORPUS = Path(__file__).resolve().parent / "corpus"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="Where to keep the indexes (default: a temp dir).")
    ap.add_argument("--docs", type=int, default=300, help="How many example abstracts to index.")
    args = ap.parse_args()

    # 1. Encode: k-sparse, L2-normalised codes; their dot product is a cosine.
    enc = CSREncoder.from_pretrained()  # the shipped default model
    codes = enc.encode_documents(["Vitamin D and bone health.", "Graphene transistors."], k=8)
    query = enc.encode_queries(["does vitamin D help bones?"])
    print(f"model {enc.model_id}: h={enc.h} latents, k={enc.k} active; codes {codes}")
    print("query code:", {int(i): round(float(v), 3) for i, v in zip(query[0].indices, query[0].values)})
    print("cosines:", [round(float(x), 3) for x in query.dot(codes)[0]])

    # 2. A collection owns its model: ingest adapts a head to the corpus's own chunks, stores it, indexes
    #    the codes in Qdrant Edge and the backbone vectors in a FAISS fallback (same point ids).
    root = Path(args.store or tempfile.mkdtemp(prefix="csr-quickstart-"))
    folder = root / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(CORPUS.glob("*.txt"))[: args.docs]:
        (folder / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    col = open_collection("quickstart", path=root / "store")
    report = col.ingest(folder, with_fallback=True, progress=False)
    adapted = report.adapt or {}
    print(f"indexed {report.points} chunks in {root}; adapted: {adapted.get('adapted', 'reused the stored model')}"
          f" (model {col.encoder.model_id})")

    # 3. Search with the fallback policy and the collection's own model; every hit says which path served it.
    searcher = col.searcher()
    for q in ["Does vitamin D supplementation reduce the risk of fractures?", "qwerty zxcv"]:
        answer = searcher.answer(q, top_k=3)
        print(f"\n{q!r} -> {answer.reason} ({answer.sparse_positive} positive sparse hits)")
        for rank, hit in enumerate(answer.hits, 1):
            snippet = " ".join(hit.payload["text"].split())[:70]
            print(f"  {rank}. {hit.score:.3f} [{hit.served_by:6}] {Path(hit.payload['source']).name}: {snippet}…")
    searcher.close()


if __name__ == "__main__":
    main()
