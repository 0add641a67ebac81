"""csr-adapter's Python API in one page: encode, index (Qdrant Edge + FAISS fallback), search.

    python examples/quickstart.py [--store DIR]

Runs offline on CPU in well under a minute: the shipped model (MiniLM backbone + CSR head), 40 of
the SciFact abstracts in examples/corpus, an embedded Qdrant Edge shard for the sparse codes and a
FAISS index of the backbone vectors as the fallback, both in one id space.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

from csr_adapter import CSREncoder
from csr_adapter.integrations.base import CollectionMeta, Point
from csr_adapter.integrations.faiss import FaissBackend
from csr_adapter.integrations.fallback import FallbackSearcher, WithFallback
from csr_adapter.integrations.qdrant_edge import EdgeBackend

CORPUS = Path(__file__).resolve().parent / "corpus"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="Where to keep the indexes (default: a temp dir).")
    ap.add_argument("--docs", type=int, default=40, help="How many example abstracts to index.")
    args = ap.parse_args()

    # 1. Encode: k-sparse, L2-normalised codes; their dot product is a cosine.
    enc = CSREncoder.from_pretrained()  # the shipped default model
    codes = enc.encode_documents(["Vitamin D and bone health.", "Graphene transistors."], k=8)
    query = enc.encode_queries(["does vitamin D help bones?"])
    print(f"model {enc.model_id}: h={enc.h} latents, k={enc.k} active; codes {codes}")
    print("query code:", {int(i): round(float(v), 3) for i, v in zip(query[0].indices, query[0].values)})
    print("cosines:", [round(float(x), 3) for x in query.dot(codes)[0]])

    # 2. Index: sparse codes in Qdrant Edge, backbone vectors in FAISS, same point ids.
    files = sorted(CORPUS.glob("*.txt"))[: args.docs]
    texts = [f.read_text(encoding="utf-8") for f in files]
    dense = enc.encode_dense(texts)  # one backbone pass gives both vectors
    sparse_codes = enc.sparsify(dense, k=enc.k)
    root = Path(args.store or tempfile.mkdtemp(prefix="csr-quickstart-"))
    sparse = EdgeBackend(root / "qdrant", meta=CollectionMeta(enc.model_id, enc.h, enc.k))
    fallback = FaissBackend(root / "faiss", meta=CollectionMeta(enc.model_id, enc.h, enc.k, enc.d))
    both = WithFallback(sparse, fallback)
    both.upsert([Point(str(uuid.uuid5(uuid.NAMESPACE_URL, f.name)), {"text": t, "source": f.name}, c, d)
                 for f, t, c, d in zip(files, texts, sparse_codes, dense)])
    print(f"indexed {sparse.count()} abstracts in {root}")

    # 3. Search with the fallback policy; every hit says which path served it.
    searcher = FallbackSearcher(enc, sparse, fallback)
    for q in ["Does vitamin D supplementation reduce the risk of fractures?", "qwerty zxcv"]:
        answer = searcher.answer(q, top_k=3)
        print(f"\n{q!r} -> {answer.reason} ({answer.sparse_positive} positive sparse hits)")
        for rank, hit in enumerate(answer.hits, 1):
            snippet = " ".join(hit.payload["text"].split())[:70]
            print(f"  {rank}. {hit.score:.3f} [{hit.served_by:6}] {hit.payload['source']}: {snippet}…")
    both.close()


if __name__ == "__main__":
    main()
