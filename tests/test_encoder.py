"""CSREncoder on the real MiniLM backbone: parity, sparsity, order, save/load, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from csr_adapter import CSREncoder
from csr_adapter.errors import ModelLoadError

N_DOCS = 8  # long abstracts first in ``texts``, then 8 short queries, then two tiny texts


@pytest.fixture(scope="module")
def texts(scifact_slice) -> list[str]:
    """Mixed lengths (abstracts cut at 256 tokens, queries, a word): batches pad and sort by length."""
    docs = list(scifact_slice["docs"].values())[:N_DOCS]
    return docs + list(scifact_slice["queries"].values())[:8] + ["short", "a b c"]


def test_dense_matches_sentence_transformers(untrained_encoder, texts) -> None:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(untrained_encoder.backbone.path), device="cpu")
    ref = st.encode(texts, batch_size=16, convert_to_numpy=True)
    ours = untrained_encoder.encode_dense(texts, batch_size=7)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999
    assert untrained_encoder.backbone.max_seq_length == st.max_seq_length == 256


def test_codes_are_k_sparse_unit_norm_and_in_input_order(encoder, texts) -> None:
    dense = encoder.encode_dense(texts, batch_size=5)  # one backbone pass, coded at each k (documents)
    for k in (2, 8, 32):
        codes = encoder.sparsify(dense, k=k)
        assert len(codes) == len(texts) and codes.dim == encoder.h
        assert (codes.nnz <= k).all() and (codes.nnz > 0).all()
        np.testing.assert_allclose(np.linalg.norm(codes.to_dense(), axis=1), 1.0, rtol=1e-5)
        assert all((np.diff(r.indices) > 0).all() and (r.values > 0).all() for r in codes)
    batch = encoder.encode_documents(texts, k=8, batch_size=4)  # the whole path, other batches: same codes
    codes = encoder.sparsify(dense, k=8)
    np.testing.assert_array_equal(batch.indices, codes.indices)
    np.testing.assert_allclose(batch.values, codes.values, atol=1e-5)
    single = [encoder.encode(t, k=8)[0] for t in texts[::7]]
    for row, alone in zip([batch[i] for i in range(0, len(texts), 7)], single):
        assert row.indices.tolist() == alone.indices.tolist()
        np.testing.assert_allclose(row.values, alone.values, atol=1e-5)


def test_retrieval_sanity_query_prefers_its_document(encoder, scifact_slice, scifact_dense) -> None:
    qrels, queries, docs = scifact_slice["qrels"], scifact_slice["queries"], scifact_slice["docs"]
    ids = list(docs)
    d = encoder.sparsify(scifact_dense, k=32)  # the session's one backbone pass over the slice's documents
    q = encoder.encode_queries([queries[x] for x in qrels], k=32)
    top = q.dot(d).argmax(axis=1)
    hits = sum(ids[t] in qrels[qid] for t, qid in zip(top, qrels))
    assert hits / len(qrels) >= 0.4  # 240 candidate docs; chance is < 0.01


def test_encode_queries_and_documents_apply_prefixes(untrained_encoder) -> None:
    enc = untrained_encoder
    old = enc.config.query_prefix
    try:
        enc.config.query_prefix = "query: "
        np.testing.assert_allclose(enc.encode_queries("x").to_dense(), enc.encode("query: x").to_dense())
    finally:
        enc.config.query_prefix = old


def test_singular_names_and_similarity(encoder, texts) -> None:
    from csr_adapter import SparseEmbeddings

    assert CSREncoder.encode_queries is CSREncoder.encode_query  # the plural forms stay, as aliases
    assert CSREncoder.encode_documents is CSREncoder.encode_document
    docs, queries = encoder.encode_document(texts[:5], k=8), encoder.encode_query(texts[N_DOCS:N_DOCS + 3], k=8)
    np.testing.assert_array_equal(docs.to_dense(), encoder.encode_documents(texts[:5], k=8).to_dense())
    sim = encoder.similarity(queries, docs)
    assert sim.shape == (3, 5) and sim.dtype == np.float32
    np.testing.assert_allclose(sim, queries.to_dense() @ docs.to_dense().T, atol=1e-6)
    np.testing.assert_allclose(encoder.similarity(queries[0], docs), sim[:1], atol=1e-6)  # a row = batch of one
    assert encoder.similarity_fn_name == "dot"
    # a query code need not be positive or k-long (asymmetric query modes): a plain dot product all the same
    signed = SparseEmbeddings.from_dense(np.where(np.arange(encoder.h) % 2, -1.0, 1.0)[None, :])
    np.testing.assert_allclose(encoder.similarity(signed, docs), signed.to_dense() @ docs.to_dense().T, atol=1e-5)
    with pytest.raises(TypeError, match="encode texts first"):
        encoder.similarity("a query", docs)
    with pytest.raises(ValueError, match="dim 10"):
        encoder.similarity(SparseEmbeddings.empty(10), docs)


def test_save_load_round_trip_gives_identical_codes(untrained_encoder, texts, tmp_path) -> None:
    out = untrained_encoder.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "head.safetensors"]
    card = (out / "README.md").read_text()
    assert "all-MiniLM-L6-v2" in card and "| latents h | 1536 |" in card
    again = CSREncoder.from_pretrained(out, device="cpu")
    assert again.model_id == untrained_encoder.model_id
    a, b = untrained_encoder.encode(texts[:6], k=8), again.encode(texts[:6], k=8)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)


def test_decode_maps_back_to_dense_space(encoder, texts) -> None:
    dense = encoder.encode_dense(texts[:4])
    codes = encoder.sparsify(dense, k=32, normalize=False)
    recon = encoder.decode(codes)
    assert recon.shape == dense.shape
    cos = (recon * dense).sum(1) / np.linalg.norm(recon, axis=1) / np.linalg.norm(dense, axis=1)
    assert cos.min() > 0.5  # a trained head reconstructs its input direction


# -- bad input ---------------------------------------------------------------------------------

def test_empty_inputs(untrained_encoder) -> None:
    assert len(untrained_encoder.encode([])) == 0
    codes = untrained_encoder.encode(["", "   ", "text"])
    assert codes.nnz.tolist()[:2] == [0, 0] and codes.nnz[2] > 0
    assert untrained_encoder.encode_dense([]).shape == (0, 384)


def test_non_string_items_name_the_index(untrained_encoder) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        untrained_encoder.encode(["ok", 3])
    with pytest.raises(TypeError):
        untrained_encoder.encode(b"bytes")


@pytest.mark.parametrize("k", [0, -3, 1537])
def test_bad_k(untrained_encoder, k) -> None:
    with pytest.raises(ValueError, match="k must be in"):
        untrained_encoder.encode(["x"], k=k)


def test_sparsify_rejects_wrong_dims(untrained_encoder) -> None:
    with pytest.raises(ValueError, match=r"\(n, 384\)"):
        untrained_encoder.sparsify(np.zeros((2, 128), np.float32))


@pytest.fixture()
def saved(untrained_encoder, tmp_path) -> Path:
    return untrained_encoder.save_pretrained(tmp_path / "model")


def test_missing_head_file(saved) -> None:
    (saved / "head.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"head\.safetensors: missing"):
        CSREncoder.from_pretrained(saved)


def test_truncated_head_file(saved) -> None:
    data = (saved / "head.safetensors").read_bytes()
    (saved / "head.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        CSREncoder.from_pretrained(saved)


def test_misshaped_head(saved) -> None:
    cfg = json.loads((saved / "config.json").read_text())
    cfg["h"] = 768
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"tensor 'W' has shape \(1536, 384\)"):
        CSREncoder.from_pretrained(saved)


@pytest.mark.parametrize("name,bad", [("W", float("nan")), ("b_pre", float("inf")), ("b_lat", float("-inf"))])
def test_non_finite_head_weights_are_refused_at_load(saved, tmp_path, name, bad) -> None:
    """Issue 29.10: a head with NaN/inf weights loaded, and ingest wrote empty points with exit 0. It is a
    one-line error naming the file and tensor, at load (the CLI too: nothing is written)."""
    from click.testing import CliRunner
    from safetensors.torch import load_file, save_file

    from csr_adapter.cli import cli

    tensors = load_file(str(saved / "head.safetensors"))
    tensors[name].view(-1)[7] = bad
    save_file(tensors, str(saved / "head.safetensors"))
    with pytest.raises(ModelLoadError, match=rf"head\.safetensors: tensor '{name}' has non-finite values"):
        CSREncoder.from_pretrained(saved)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a note about enzymes")
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path / "docs"), "--model", str(saved), "--path",
                                      str(tmp_path / "store"), "--no-adapt"])
    assert result.exit_code == 1 and "non-finite values" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "store").exists()


def test_zero_width_or_control_only_queries_code_as_empty(encoder) -> None:
    """Issue 29.11, the query side: such a query got a full code (that of an empty token sequence), so search
    answered it with arbitrary hits; it codes like the empty string now (no latents, a zero dense row)."""
    for text in ("\u200b\u200c\ufeff", "\x01\x02\x7f", " \u2060\t"):
        assert encoder.encode_query(text).nnz.tolist() == [0]
        assert not encoder.encode_dense([text]).any()
    assert encoder.encode_query("zero\u200bwidth in a real query").nnz.tolist() == [64]


def test_bad_config(saved) -> None:
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json: invalid JSON"):
        CSREncoder.from_pretrained(saved)
    (saved / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json: missing"):
        CSREncoder.from_pretrained(saved)


def test_unknown_backbone_and_missing_dir(saved, tmp_path) -> None:
    cfg = json.loads((saved / "config.json").read_text())
    cfg["backbone"] = "org/some-hub-model"
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unknown backbone 'org/some-hub-model'"):
        CSREncoder.from_pretrained(saved)
    with pytest.raises(ModelLoadError, match="model directory not found"):
        CSREncoder.from_pretrained(tmp_path / "nope")


def test_backbone_without_safetensors_is_refused(untrained_encoder, tmp_path) -> None:
    """Only safetensors weights load: a pickle-only backbone directory is an error, never unpickled."""
    bb = tmp_path / "bb"
    shutil.copytree(untrained_encoder.backbone.path, bb)
    (bb / "model.safetensors").rename(bb / "pytorch_model.bin")
    from csr_adapter.backbone import Backbone

    with pytest.raises(ModelLoadError, match="model.safetensors: missing"):
        Backbone(bb)


def test_finetuned_backbone_is_saved_inside_model_dir(untrained_encoder, tmp_path) -> None:
    out = untrained_encoder.save_pretrained(tmp_path / "m", save_backbone=True)
    assert (out / "backbone" / "model.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["backbone"] == "backbone"
    again = CSREncoder.from_pretrained(out, device="cpu")
    np.testing.assert_allclose(again.encode_dense(["hello"]), untrained_encoder.encode_dense(["hello"]), atol=1e-6)
