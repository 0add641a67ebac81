"""FastEmbed timing worker for ``benchmarks/encode.py`` (runs in FastEmbed's own virtual environment).

FastEmbed pins a ``huggingface_hub`` that conflicts with this project's, so it lives in a separate venv
and this worker runs there as a subprocess. It serves FastEmbed's ``TextEmbedding`` (ONNX Runtime, its
own tokenizer, mean pooling, normalisation) for ``sentence-transformers/all-MiniLM-L6-v2`` from a local
directory (no download): the same backbone's ONNX file and tokenizer files. Protocol: argv = texts JSON
file, model dir, threads, batch size; one line ``go`` on stdin -> one line with the encode seconds.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    texts_file, model_dir, threads, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    from fastembed import TextEmbedding

    with open(texts_file, encoding="utf-8") as f:
        texts = json.load(f)
    model = TextEmbedding("sentence-transformers/all-MiniLM-L6-v2", specific_model_path=model_dir,
                          threads=threads, cache_dir=model_dir)
    list(model.embed(texts[:64], batch_size=batch_size))  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        start = time.perf_counter()
        vecs = list(model.embed(texts, batch_size=batch_size))
        print(f"{time.perf_counter() - start} {len(vecs)}", flush=True)


if __name__ == "__main__":
    main()
