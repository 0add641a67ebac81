"""Asymmetric codes: queries coded at a wider k than documents (``config.query_k``), real backbone and head."""

from __future__ import annotations

import numpy as np
import pytest

from csr_adapter import CSREncoder
from csr_adapter.config import CSRConfig


def wide(encoder: CSREncoder, query_k: int | None) -> CSREncoder:
    return encoder.with_query_k(query_k)


def test_config_validates_and_round_trips_query_k(tmp_path):
    for bad in (0, 1537, True, 2.5, "8"):
        with pytest.raises(ValueError, match="query_k"):
            CSRConfig(h=1536, query_k=bad)
    config = CSRConfig(query_k=64)
    config.save(tmp_path)
    assert CSRConfig.load(tmp_path).query_k == 64
    assert CSRConfig.from_dict({"d": 384, "h": 1536}).query_k is None  # older model files: symmetric


def test_queries_are_coded_wider_documents_unchanged(encoder, scifact_slice):
    texts = list(scifact_slice["docs"].values())[:4]
    asym = wide(encoder, 64)
    docs, plain = asym.encode_documents(texts, k=8), encoder.encode_documents(texts, k=8)
    assert np.array_equal(docs.indices, plain.indices) and np.allclose(docs.values, plain.values)
    queries = asym.encode_queries(["does vitamin D prevent fractures?", "gene expression in tumours"], k=8)
    nnz = np.diff(queries.indptr)
    assert (nnz > 8).all() and (nnz <= 64).all() and (queries.values > 0).all()
    # the wide code extends the narrow one: its top-8 entries are the 8-sparse query code
    narrow = wide(encoder, None).encode_queries(["does vitamin D prevent fractures?"], k=8)[0]
    row = queries[0]
    top = np.sort(row.indices[np.argsort(-row.values)[:8]])
    assert np.array_equal(top, np.sort(narrow.indices))
    # asking for more than query_k gets k (at most: only positive pre-activations are kept)
    text = ["bone density in older women"]
    assert asym.encode_queries(text, k=128).mean_nnz >= asym.encode_queries(text).mean_nnz
    assert asym.encode_queries(text, k=128).mean_nnz == encoder.encode_queries(text, k=128).mean_nnz
    assert asym.info()["query_k"] == 64


def test_query_k_leaves_the_model_identity_alone(encoder):
    # documents are coded the same, so a collection built before query_k was set stays searchable
    assert wide(encoder, 64).model_id == wide(encoder, None).model_id == encoder.model_id


def test_adapted_model_carries_query_k(encoder, scifact_dense, tmp_path):
    from csr_adapter.training.adapt import AdaptConfig

    dense = scifact_dense[:64]  # 64 real abstracts' backbone vectors (the session's pass over the slice)
    adapted = encoder.adapt(dense=dense, config=AdaptConfig(min_steps=10, max_steps=10, query_k=48,
                                                            query_code_weight=1.0))
    assert adapted.config.query_k == 48 and adapted.config.training["adapt"]["query_k"] == 48
    reloaded = CSREncoder.from_pretrained(adapted.save_pretrained(tmp_path / "m"), device="cpu")
    assert reloaded.config.query_k == 48 and reloaded.model_id == adapted.model_id
    q = reloaded.encode_queries(["vitamin D and bone health"])
    assert 8 < q.mean_nnz <= 48


def test_cli_encode_query_uses_the_model_query_k(encoder, tmp_path):
    import json

    from click.testing import CliRunner

    from csr_adapter.cli import cli

    model = wide(encoder, 40).save_pretrained(tmp_path / "m")
    run = CliRunner().invoke
    doc = run(cli, ["encode", "vitamin D and bone fractures", "--model", str(model), "--json"])
    query = run(cli, ["encode", "vitamin D and bone fractures", "--query", "--model", str(model), "--json"])
    assert doc.exit_code == 0 and query.exit_code == 0, doc.output + query.output
    assert len(json.loads(doc.output)["indices"]) == 8
    assert 8 < len(json.loads(query.output)["indices"]) <= 40
