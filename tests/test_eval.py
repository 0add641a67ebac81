"""Evaluation: TREC nDCG@10 / Recall@100 equal ir-measures on the same run; `csr-adapter eval`."""

from __future__ import annotations

import json

import ir_measures
import numpy as np
import pytest
from click.testing import CliRunner
from ir_measures import R, nDCG

from csr_adapter.cli import cli
from csr_adapter.sparse import SparseEmbeddings
from csr_adapter.training.evaluate import code_stats, ndcg_at, rank, recall_at


@pytest.fixture(scope="module")
def mini(scifact_slice):
    """The SciFact slice: 240 real docs, 40 queries. Its doc vectors are the session's (``scifact_dense``,
    in the run's default embedding cache), which `csr-adapter eval` below finds there too."""
    return {"docs": scifact_slice["docs"], "qrels": scifact_slice["qrels"], "queries": scifact_slice["queries"]}


@pytest.fixture(scope="module")
def slice_runs(encoder, mini, scifact_dense):
    """Real runs: dense, and sparse at k=2 (many score ties) and k=8."""
    from csr_adapter.cache import cached_dense

    qids, dids = list(mini["queries"]), list(mini["docs"])
    q = cached_dense(encoder, [mini["queries"][i] for i in qids], show_progress_bar=False)
    d = scifact_dense  # rows in mini["docs"] order
    runs = {"dense": rank(q @ d.T, qids, dids)}
    for k in (2, 8):
        runs[f"k{k}"] = rank(encoder.sparsify(q, k=k).dot(encoder.sparsify(d, k=k)), qids, dids)
    return runs


@pytest.mark.parametrize("name", ["dense", "k2", "k8"])
def test_metrics_equal_ir_measures(slice_runs, mini, name: str) -> None:
    run, qrels = slice_runs[name], mini["qrels"]
    assert len(qrels) >= 10
    ours_ndcg, ours_recall = ndcg_at(run, qrels, 10), recall_at(run, qrels, 100)
    theirs = {(m.query_id, str(m.measure)): m.value for m in ir_measures.iter_calc([nDCG @ 10, R @ 100], qrels, run)}
    for qid in qrels:
        assert ours_ndcg[qid] == pytest.approx(theirs[(qid, "nDCG@10")], abs=1e-9)
        assert ours_recall[qid] == pytest.approx(theirs[(qid, "R@100")], abs=1e-9)


def test_graded_relevance_and_ties() -> None:
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": {"x": 0.5, "b": 0.5, "a": 0.4}}  # tie between x and b: trec_eval puts "x" first
    ideal = 2 / np.log2(2) + 1 / np.log2(3)
    assert ndcg_at(run, qrels)["q"] == pytest.approx((1 / np.log2(3) + 2 / np.log2(4)) / ideal)
    agg = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)
    assert ndcg_at(run, qrels)["q"] == pytest.approx(agg[nDCG @ 10])
    assert recall_at(run, qrels, 1)["q"] == 0.0 and recall_at(run, qrels, 3)["q"] == 1.0


def test_rank_keeps_trec_tie_order_at_the_cutoff() -> None:
    scores = np.array([[1.0, 0.5, 0.5, 0.5, 0.0]])
    run = rank(scores, ["q"], ["d0", "d1", "d3", "d2", "d4"], depth=3, positive_only=True)
    assert list(run["q"]) == ["d0", "d3", "d2"]  # ties by doc id descending, as trec_eval
    assert "d4" not in rank(scores, ["q"], ["d0", "d1", "d3", "d2", "d4"], depth=5, positive_only=True)["q"]


def ndcg_mean(run, qrels) -> float:
    return float(np.mean(list(ndcg_at(run, qrels, 10).values())))


def test_code_stats() -> None:
    codes = SparseEmbeddings.from_dense(np.array([[1, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 1.0]]))
    stats = code_stats(codes)
    assert stats["dead_pct"] == 25.0 and stats["longest_list"] == 2
    assert stats["mean_active"] == pytest.approx(5 / 3)
    assert stats["posting_sum_p2"] == pytest.approx((2 / 5) ** 2 * 2 + (1 / 5) ** 2)


def test_eval_cli_json(tmp_path, mini, slice_runs) -> None:
    from csr_adapter.training.beir import load_beir

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    qrels = mini["qrels"]
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in mini["docs"].items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                  for q, t in mini["queries"].items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q, r in qrels.items() for d, g in r.items()))
    assert load_beir(folder, "test").qrels
    res = CliRunner().invoke(cli, ["eval", "--data", str(folder), "--k", "2,8", "--json", "--threads", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    rows = {r["k"]: r for r in out["rows"]}
    assert rows["dense"]["ndcg@10"] == pytest.approx(ndcg_mean(slice_runs["dense"], qrels))
    assert set(rows) == {"dense", 2, 8}
    for k in (2, 8):
        assert 0 <= rows[k]["ndcg@10"] <= 1 and rows[k]["mean_active"] <= k
        assert {"recall@100", "dead_pct", "posting_sum_p2", "longest_list"} <= set(rows[k])
    lexical = {r["k"]: r for r in out["lexical_rows"]}  # BM25, and each k fused with it as search fuses
    assert set(lexical) == {"bm25", "2+bm25", "8+bm25"}
    assert lexical["8+bm25"]["ndcg@10"] >= min(rows[8]["ndcg@10"], lexical["bm25"]["ndcg@10"])
    from csr_adapter.training.evaluate import bm25_scores

    data = load_beir(folder, "test")
    scores = bm25_scores(data)  # the lexical vector's BM25: the engine's IDF over these documents
    assert scores.shape == (len(data.queries), len(data.corpus)) and (scores >= 0).all() and scores.max() > 0
    bad = CliRunner().invoke(cli, ["eval", "--data", str(folder), "--k", "2,x"])
    assert bad.exit_code != 0 and "comma-separated" in bad.output
