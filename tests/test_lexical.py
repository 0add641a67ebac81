"""The BM25 lexical vector beside the codes (issue 26): weights, engine-side IDF, fusion, and the collection
lifecycle (re-ingest, prune, delete, export, collections made before it), on real Qdrant Edge and qdrant-client."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")

from csr_adapter import open_collection  # noqa: E402
from csr_adapter.integrations.base import CollectionMeta, UnsupportedError  # noqa: E402
from csr_adapter.lexical import BM25, LexicalError, query_vector, term_id, terms  # noqa: E402

DOCS = {  # hand-sized: every weight and score below is computed by hand from these
    "a.txt": "Cats chase mice. Cats sleep.",
    "b.txt": "Dogs chase cats.",
    "c.txt": "The mice eat cheese.",
}


def test_terms_follow_bm25s_rules():
    # lowercase, 2+ word characters, Lucene stop words out, Snowball stems
    assert terms("The Running dogs are running in 2 parks, e.g. Paris!") == ["run", "dog", "run", "park", "pari"]
    assert terms("a I") == [] and terms("") == []


def test_term_ids_match_fastembed_bm25():
    import mmh3

    assert term_id("cat") == abs(mmh3.hash("cat"))  # FastEmbed Qdrant/bm25: abs(mmh3.hash(stem))
    q = query_vector("cats cats CAT chase")
    assert dict(zip(q.indices.tolist(), q.values.tolist())) == {term_id("cat"): 3.0, term_id("chase"): 1.0}


def test_document_weights_are_bm25_term_frequency_part():
    bm = BM25.fit(list(DOCS.values()))
    # lengths in terms: a = cat chase mice cat sleep (5), b = dog chase cat (3), c = mice eat chees (3)
    assert bm.avgdl == pytest.approx(11 / 3)
    vec = bm.document(DOCS["a.txt"])
    weights = dict(zip(vec.indices.tolist(), vec.values.tolist()))
    assert (bm.k1, bm.b) == (1.5, 0.75)
    norm = 1.5 * (1 - 0.75 + 0.75 * 5 / (11 / 3))
    assert weights[term_id("cat")] == pytest.approx(2 * 2.5 / (2 + norm), rel=1e-6)
    assert weights[term_id("sleep")] == pytest.approx(1 * 2.5 / (1 + norm), rel=1e-6)
    assert len(weights) == 4


def test_bad_settings_are_one_line_errors():
    with pytest.raises(LexicalError, match="b must be a number"):
        BM25(avgdl=3.0, b=2.0)
    with pytest.raises(LexicalError, match="tokenizer 'other'"):
        BM25.from_dict({"avgdl": 3.0, "tokenizer": "other"})


def _corpus(tmp_path, docs=DOCS):
    folder = tmp_path / "corpus"
    folder.mkdir(exist_ok=True)
    for name, text in docs.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_engine_scores_are_bm25_with_collection_idf(tmp_path, encoder):
    col = open_collection("lex", path=tmp_path / "store", encoder=encoder, echo=lambda m: None)
    col.ingest(_corpus(tmp_path), progress=False)
    with col.searcher(mode="lexical") as searcher:
        assert searcher.mode == "lexical" and searcher.default_mode == "fused"
        hits = searcher.search("cat chases", top_k=3)
    bm = BM25.fit(list(DOCS.values()))

    def idf(n: int) -> float:  # Qdrant's IDF modifier over the collection's 3 points
        return math.log(1 + (3 - n + 0.5) / (n + 0.5))

    expected = {}
    for name, text in DOCS.items():
        vec = bm.document(text)
        w = dict(zip(vec.indices.tolist(), vec.values.tolist()))
        expected[name] = w.get(term_id("cat"), 0) * idf(2) + w.get(term_id("chase"), 0) * idf(2)
    got = {h.payload["source"].rsplit("/", 1)[-1]: h.score for h in hits}
    assert set(got) == {"a.txt", "b.txt"}  # c.txt shares no term
    for name, score in got.items():
        assert score == pytest.approx(expected[name], rel=1e-5)
    assert [h.served_by for h in hits] == ["lexical", "lexical"]


PARAPHRASE = {
    "zx.txt": "The QZX-7741 valve assembly failed its pressure inspection on Tuesday.",
    "heart.txt": "Myocardial infarction happens when blood flow to the heart muscle is blocked.",
    **{f"filler{i}.txt": text for i, text in enumerate([
        "Photosynthesis converts light into chemical energy in plants.",
        "The stock market fell sharply after the interest rate decision.",
        "Volcanic eruptions can inject ash high into the stratosphere.",
        "A sonnet has fourteen lines and a fixed rhyme scheme.",
        "Glaciers carve U-shaped valleys as they move downhill.",
        "The violin is tuned in perfect fifths.",
    ])},
}


def test_fused_finds_rare_terms_and_paraphrases(tmp_path, encoder):
    col = open_collection("fz", path=tmp_path / "store", encoder=encoder, echo=lambda m: None)
    col.ingest(_corpus(tmp_path, PARAPHRASE), progress=False)

    def top(query, mode=None):
        return col.search(query, top_k=1, mode=mode)[0].payload["source"].rsplit("/", 1)[-1]

    # only its rare term matches: BM25 finds it, and the fused default keeps it on top
    assert top("QZX-7741", mode="lexical") == "zx.txt"
    assert top("QZX-7741") == "zx.txt"
    # no shared word: only the codes match the paraphrase, and fused still answers it
    assert not [h for h in col.search("cardiac arrest", top_k=5, mode="lexical")
                if h.payload["source"].endswith("heart.txt")]
    assert top("cardiac arrest", mode="codes") == "heart.txt"
    assert top("cardiac arrest") == "heart.txt"
    hits = col.search("cardiac arrest", top_k=3)
    assert all(h.served_by == "fused" for h in hits)


def test_reingest_prune_delete_keep_both_vectors(tmp_path, encoder):
    folder = _corpus(tmp_path)
    col = open_collection("lc", path=tmp_path / "store", encoder=encoder, echo=lambda m: None)
    first = col.ingest(folder, progress=False)
    meta = col.meta()
    assert meta.lexical is not None and meta.lexical["avgdl"] == pytest.approx(11 / 3, rel=1e-3)
    again = col.ingest(folder, progress=False)
    assert again.written == 0 and col.meta().lexical == meta.lexical  # stored settings never re-fitted
    (folder / "b.txt").write_text("Dogs chase squirrels all day.", encoding="utf-8")
    (folder / "c.txt").unlink()
    changed = col.ingest(folder, prune=True, progress=False)
    assert changed.written == 1 and changed.pruned == 1 and changed.points == first.points - 1
    be = col.open_backend()
    try:
        points = be.retrieve([pid for pid, _ in be.scroll([])], with_vectors=True)
        assert all(p.sparse is not None and p.lexical is not None for p in points)
        by_source = {p.payload["source"].rsplit("/", 1)[-1]: p for p in points}
        assert term_id("squirrel") in by_source["b.txt"].lexical.indices.tolist()
        be.delete([by_source["b.txt"].id])
    finally:
        be.close()
    assert [h.payload["source"].rsplit("/", 1)[-1] for h in col.search("squirrels", top_k=5, mode="lexical")] == []


def test_export_copies_the_lexical_vector(tmp_path, encoder):
    from qdrant_client import QdrantClient

    from csr_adapter.export import export_collection

    src = open_collection("ex", path=tmp_path / "store", encoder=encoder, echo=lambda m: None)
    src.ingest(_corpus(tmp_path), progress=False)
    client = QdrantClient(":memory:")
    dst = open_collection("ex", client=client, encoder=encoder)
    report = export_collection(src, dst, progress=False)
    assert report.written == 3
    assert export_collection(src, dst, progress=False).written == 0  # lexical compared too: nothing differs
    hits = dst.search("cheese", top_k=3, mode="lexical")
    assert [h.payload["source"].rsplit("/", 1)[-1] for h in hits] == ["c.txt"]
    fused = dst.search("cheese", top_k=3)
    assert fused[0].payload["source"].endswith("c.txt") and fused[0].served_by == "fused"


def test_collection_without_lexical_searches_as_before(tmp_path, encoder):
    folder = _corpus(tmp_path)
    old = open_collection("old", path=tmp_path / "store", encoder=encoder, echo=lambda m: None)
    old.ingest(folder, progress=False, lexical=False)
    assert old.meta().lexical is None and "lexical" not in json.dumps(old.meta().to_dict())
    with old.searcher() as searcher:
        assert searcher.mode == "codes"
        hits = searcher.search("mice eating cheese", top_k=2)
    assert hits and all(h.served_by == "sparse" for h in hits)
    with pytest.raises(UnsupportedError, match="no lexical vector"):
        old.searcher(mode="fused")


def test_meta_round_trip_and_mismatch():
    meta = CollectionMeta("m", 16, 4, lexical=BM25(avgdl=7.0).to_dict())
    assert CollectionMeta.from_dict(meta.to_dict()) == meta
    assert CollectionMeta("m", 16, 4).mismatches(meta)  # stored without, wanted with: refused
    assert not meta.mismatches(CollectionMeta("m", 16, 4))  # wanted without: the stored settings hold
    assert meta.bm25().avgdl == 7.0


def test_agrees_with_bm25s_on_real_text(scifact_slice):
    """Our terms + the engine's IDF rank like the reference implementation (bm25s, Lucene variant)."""
    bm25s = pytest.importorskip("bm25s")
    stemmer_mod = pytest.importorskip("Stemmer")
    from qdrant_edge import (
        EdgeConfig,
        EdgeShard,
        EdgeSparseVectorParams,
        Modifier,
        Query,
        QueryRequest,
        SparseVector,
        UpdateOperation,
    )
    from qdrant_edge import Point as EdgePoint

    ids = list(scifact_slice["docs"])
    texts = [scifact_slice["docs"][d] for d in ids]
    bm = BM25.fit(texts)
    import tempfile
    import uuid

    with tempfile.TemporaryDirectory() as tmp:
        shard = EdgeShard.create(tmp + "/s", EdgeConfig(sparse_vectors={"lexical": EdgeSparseVectorParams(
            modifier=Modifier.Idf)}))
        points = []
        for n, text in enumerate(texts):
            v = bm.document(text)
            points.append(EdgePoint(uuid.UUID(int=n + 1), {"lexical": SparseVector(v.indices.tolist(),
                                                                                   v.values.tolist())}, {}))
        shard.update(UpdateOperation.upsert_points(points))
        stem = stemmer_mod.Stemmer("english")
        ref = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
        ref.index(bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False), show_progress=False)
        agree = []
        for query in list(scifact_slice["queries"].values())[:20]:
            q = query_vector(query)
            got = shard.query(QueryRequest(limit=10, query=Query.Nearest(
                SparseVector(q.indices.tolist(), q.values.tolist()), using="lexical"), with_payload=False))
            ours = [uuid.UUID(str(p.id)).int - 1 for p in got]
            docs, _ = ref.retrieve(bm25s.tokenize([query], stopwords="en", stemmer=stem, show_progress=False),
                                   k=10, show_progress=False)
            agree.append(len(set(ours[:10]) & set(docs[0].tolist())) / 10)
        shard.close()
    assert np.mean(agree) >= 0.9, agree


def test_readapting_an_old_collection_adds_the_lexical_vector(tmp_path, encoder, scifact_slice):
    """A collection made without the lexical vector searches by codes, says how to add it, and `ingest --adapt`
    (rebuilt from cached vectors) adds it; the CLI words the hint as flags."""
    from click.testing import CliRunner

    from csr_adapter.cli import cli
    from csr_adapter.training.adapt import AdaptConfig

    folder = tmp_path / "docs"
    folder.mkdir()
    for doc_id, text in list(scifact_slice["docs"].items())[:12]:
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    store = tmp_path / "store"
    col = open_collection("old", path=store, encoder=encoder, echo=lambda m: None)
    col.ingest(folder, progress=False, lexical=False, adapt=False)
    refused = CliRunner().invoke(cli, ["search", "x", "--path", str(store), "--collection", "old", "--mode", "fused"])
    assert refused.exit_code == 1 and "--adapt or --recreate" in refused.output and "Traceback" not in refused.output
    col.ingest(folder, progress=False, adapt=True, adapt_config=AdaptConfig(min_steps=5, max_steps=5))
    assert col.meta().lexical is not None
    hits = open_collection("old", path=store).search(list(scifact_slice["docs"].values())[3][:200], top_k=3)
    assert hits and {h.served_by for h in hits} == {"fused"}
