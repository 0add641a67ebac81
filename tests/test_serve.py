"""`csr-adapter serve` over real HTTP: a uvicorn server on a free loopback port, driven with httpx."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from csr_adapter.integrations.base import Point
from csr_adapter.server import ServeConfig, create_app
from csr_adapter.server.testing import serve_in_thread

KEY = "test-key-123"
DOCS = {
    "d1": ("Vitamin D supplementation and bone fractures in older adults.", "med"),
    "d2": ("Sparse autoencoders learn interpretable latent features.", "ml"),
    "d3": ("Qdrant stores sparse vectors for fast retrieval.", "ml"),
    "d4": ("Calcium intake and osteoporosis risk.", "med"),
}


@pytest.fixture(scope="module")
def enc(encoder):
    """The shipped default model (session fixture from conftest)."""
    return encoder


def make_points(enc) -> list[Point]:
    """DOCS as points with both a sparse code and a dense vector (ids: UUIDs, the doc id in the payload)."""
    texts = [t for t, _ in DOCS.values()]
    codes, dense = enc.encode_documents(texts), enc.encode_dense(texts)
    return [Point(str(uuid.uuid5(uuid.NAMESPACE_URL, i)), {"text": t, "topic": topic, "doc_id": i}, codes[n], dense[n])
            for n, (i, (t, topic)) in enumerate(DOCS.items())]


@pytest.fixture(scope="module")
def collection(enc, tmp_path_factory):
    """DOCS in the embedded engine (Qdrant Edge in a tmp dir) with an in-memory FAISS fallback."""
    from csr_adapter.integrations.base import CollectionMeta
    from csr_adapter.integrations.faiss import FaissBackend
    from csr_adapter.integrations.fallback import WithFallback
    from csr_adapter.integrations.qdrant import open_qdrant
    from csr_adapter.retrieval import Searcher as FallbackSearcher

    sparse = open_qdrant("docs", path=tmp_path_factory.mktemp("edge"), meta=CollectionMeta(enc.model_id, enc.h, enc.k))
    dense_index = FaissBackend(None)
    WithFallback(sparse, dense_index).upsert(make_points(enc))  # codes to Edge, vectors to FAISS (as ingest does)
    yield FallbackSearcher(enc, sparse=sparse, dense=dense_index)
    sparse.close()
    dense_index.close()


@pytest.fixture(scope="module")
def base(enc, collection):
    app = create_app(enc, {"docs": collection}, ServeConfig(max_inputs=16, max_chars=2000, max_body_bytes=64_000))
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base):
    with httpx.Client(base_url=base, timeout=60) as c:
        yield c


def assert_json_error(response, status: int, error_type: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "error_type"} and "Traceback" not in response.text
    if error_type:
        assert body["error_type"] == error_type
    return body


def test_embed_sparse_is_tei_shaped_and_matches_in_process(client, enc):
    texts = ["What is a sparse embedding?", "Qdrant serves sparse vectors."]
    body = client.post("/embed_sparse", json={"inputs": texts}).json()
    expected = enc.encode(texts)
    assert isinstance(body, list) and len(body) == 2
    for row, code in zip(body, expected):
        assert all(set(e) == {"index", "value"} and isinstance(e["index"], int) for e in row)
        assert [e["index"] for e in row] == code.indices.tolist()
        np.testing.assert_allclose([e["value"] for e in row], code.values, atol=1e-5)
        assert 0 < len(row) <= enc.k
    single = client.post("/embed_sparse", json={"inputs": texts[0], "truncate": True}).json()
    assert [e["index"] for e in single[0]] == [e["index"] for e in body[0]]  # values differ by padding noise


def test_embed_sparse_k_option(client, enc):
    row = client.post("/embed_sparse", json={"inputs": "sparse retrieval", "k": 3}).json()[0]
    assert 0 < len(row) <= 3
    assert_json_error(client.post("/embed_sparse", json={"inputs": "x", "k": enc.h + 1}), 422, "Validation")
    assert_json_error(client.post("/embed_sparse", json={"inputs": "x", "k": 0}), 422, "Validation")


def test_embed_dense_is_tei_shaped(client, enc):
    body = client.post("/embed", json={"inputs": ["one text", "another"]}).json()
    assert np.asarray(body).shape == (2, enc.d)
    np.testing.assert_allclose(np.linalg.norm(body, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(body, enc.encode_dense(["one text", "another"]), atol=1e-5)


@pytest.mark.parametrize("content", [b"{not json", b"", b"[]", b'{"inputs": 5}', b'{"inputs": [1, 2]}',
                                     b'{"inputs": "x", "k": "8"}', b'{"inputs": "\xff\xfe"}', b'{"inputs": null}'])
def test_bad_json_and_wrong_types_are_422(client, content):
    response = client.post("/embed_sparse", content=content, headers={"content-type": "application/json"})
    assert_json_error(response, 422)


@pytest.mark.parametrize("inputs", [[], "", "   ", ["ok", ""]])
def test_empty_inputs_are_400(client, inputs):
    """TEI: an empty batch is 400 with error_type Empty (an empty text too, here)."""
    assert_json_error(client.post("/embed_sparse", json={"inputs": inputs}), 400, "Empty")
    assert_json_error(client.post("/embed", json={"inputs": inputs}), 400, "Empty")


def test_oversized_inputs_are_413(client):
    assert_json_error(client.post("/embed_sparse", json={"inputs": ["a"] * 17}), 413, "Validation")
    assert_json_error(client.post("/embed", json={"inputs": "a" * 2001}), 413, "Validation")
    huge = b'{"inputs": "' + b"a" * 70_000 + b'"}'
    assert_json_error(client.post("/embed_sparse", content=huge, headers={"content-type": "application/json"}), 413)

    def chunks():  # no Content-Length: the limit applies while streaming
        yield b'{"inputs": "'
        for _ in range(10):
            yield b"a" * 10_000
        yield b'"}'

    streamed = client.post("/embed_sparse", content=chunks(), headers={"content-type": "application/json"})
    assert_json_error(streamed, 413, "Validation")


def test_non_json_content_type_says_so(client):
    body = assert_json_error(client.post("/embed_sparse", content=b'{"inputs": "x"}',
                                         headers={"content-type": "application/x-www-form-urlencoded"}), 422)
    assert "Content-Type: application/json" in body["error"]


def test_unknown_routes_and_methods_are_json(client):
    assert_json_error(client.get("/nope"), 404, "NotFound")
    assert_json_error(client.get("/embed_sparse"), 405)


def test_health_info_and_openapi(client, enc):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()["csr_adapter"]
    assert (info["d"], info["h"], info["k"]) == (enc.d, enc.h, enc.k) and info["model_id"] == enc.model_id
    assert info["collections"] == ["docs"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/embed_sparse", "/embed", "/search", "/health", "/info", "/v1/embeddings", "/metrics"} <= set(paths)


def test_concurrent_requests_each_get_their_own_results_in_order(client, enc):
    requests = [[f"request {i} text {j} about topic {i * 7 % 5}" for j in range(1 + i % 3)] for i in range(32)]
    expected = {i: enc.encode(texts) for i, texts in enumerate(requests)}
    before = client.get("/info").json()["csr_adapter"]["batching"]

    def call(i: int):
        return i, client.post("/embed_sparse", json={"inputs": requests[i]}).json()

    with ThreadPoolExecutor(16) as pool:
        results = dict(pool.map(call, range(32)))
    for i, rows in results.items():
        assert [[e["index"] for e in row] for row in rows] == [c.indices.tolist() for c in expected[i]], i
    after = client.get("/info").json()["csr_adapter"]["batching"]
    assert after["requests"] - before["requests"] == 32
    assert after["batches"] - before["batches"] < 32  # some requests shared a forward pass


def test_search_uses_the_fallback_policy(client, enc):
    body = client.post("/search", json={"query": "vitamin D and fractures", "top_k": 2}).json()
    assert body["collection"] == "docs" and 1 <= len(body["hits"]) <= 2
    assert body["hits"][0]["payload"]["doc_id"] in DOCS and body["hits"][0]["served_by"] in {"sparse", "dense"}
    filtered = client.post("/search", json={"query": "retrieval", "top_k": 4, "filter": {"topic": "ml"}}).json()
    assert filtered["hits"] and all(h["payload"]["topic"] == "ml" for h in filtered["hits"])
    full = client.post("/search", json={"query": "osteoporosis", "top_k": 4, "collection": "docs"}).json()
    assert len(full["hits"]) == 4  # fewer positive sparse hits than top_k: dense fills (reason few_hits)


def test_search_errors(client):
    assert_json_error(client.post("/search", json={"query": "x", "collection": "nope"}), 404, "NotFound")
    assert_json_error(client.post("/search", json={"query": " "}), 422, "Empty")
    assert_json_error(client.post("/search", json={"query": "x", "top_k": 0}), 422)
    assert_json_error(client.post("/search", json={"query": "x", "top_k": 10**6}), 422)
    assert_json_error(client.post("/search", json={"query": "x", "filter": {"topic": []}}), 422)


class Unreachable:
    """A sparse backend whose server is down: every search fails to connect."""

    name = "unreachable"

    def search(self, query, top_k=10, filter=None):
        raise ConnectionError("connection refused")

    def close(self) -> None:
        pass


def test_search_without_collections_or_backend_is_503(enc):
    from csr_adapter.retrieval import Searcher as FallbackSearcher

    with serve_in_thread(create_app(enc, config=ServeConfig(warmup=False))) as url:
        assert_json_error(httpx.post(url + "/search", json={"query": "x"}), 503, "NoCollection")
    down = {"down": FallbackSearcher(enc, sparse=Unreachable())}  # no dense fallback to serve from
    with serve_in_thread(create_app(enc, down, ServeConfig(warmup=False))) as url:
        assert_json_error(httpx.post(url + "/search", json={"query": "x"}), 503, "BackendUnavailable")


def test_auth_on_every_route_but_health(enc):
    with serve_in_thread(create_app(enc, config=ServeConfig(api_key=KEY, warmup=False))) as url:
        assert httpx.get(url + "/health").status_code == 200
        for method, path, body in [("POST", "/embed_sparse", {"inputs": "x"}), ("POST", "/embed", {"inputs": "x"}),
                                   ("POST", "/search", {"query": "x"}), ("GET", "/info", None),
                                   ("GET", "/openapi.json", None), ("GET", "/docs", None)]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                response = httpx.request(method, url + path, json=body, headers=headers)
                assert_json_error(response, 401, "Unauthorized")
                assert response.headers["www-authenticate"] == "Bearer"
        ok = httpx.post(url + "/embed_sparse", json={"inputs": "x"}, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and isinstance(ok.json()[0], list)
        schema = httpx.get(url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_overload_is_429_overloaded_with_retry_after(enc):
    config = ServeConfig(max_batch_size=1, max_wait_ms=0, max_queue=4, warmup=False)
    with serve_in_thread(create_app(enc, config=config)) as url, httpx.Client(base_url=url, timeout=60) as c:
        def call(i: int):
            return c.post("/embed_sparse", json={"inputs": [f"text {i} {j}" for j in range(4)]})

        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(call, range(12)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes, codes
    for r in responses:
        if r.status_code == 429:
            assert_json_error(r, 429, "Overloaded")
            assert r.headers["retry-after"] == "1"


def test_timeout_is_429_overloaded(enc):
    config = ServeConfig(timeout_s=0.001, warmup=False)
    with serve_in_thread(create_app(enc, config=config)) as url:
        assert_json_error(httpx.post(url + "/embed_sparse", json={"inputs": ["a"] * 8}), 429, "Overloaded")


def test_stock_tei_client_works_unchanged(base, enc, monkeypatch):
    """huggingface_hub's InferenceClient (what langchain-huggingface uses) POSTs TEI's default route."""
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)  # loopback only; the model is already loaded
    vectors = hub.InferenceClient(model=base).feature_extraction(["hello world", "sparse"])
    np.testing.assert_allclose(vectors, enc.encode_dense(["hello world", "sparse"]), atol=1e-5)


def test_serve_an_adapted_collection_codes_with_its_model_and_fuses(enc, tmp_path, scifact_slice):
    """`serve --collection X` with no --model (issue 28 item 4): /embed_sparse codes with X's adapted model, the
    codes X stores; /search fuses codes and BM25 by default and takes a mode."""
    from csr_adapter import open_collection
    from csr_adapter.server.collections import open_collections, served_encoder
    from csr_adapter.training.adapt import AdaptConfig

    folder = tmp_path / "docs"
    folder.mkdir()
    for doc_id, text in list(scifact_slice["docs"].items())[:24]:
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    col = open_collection("adapted", path=tmp_path / "store", encoder=enc, echo=lambda m: None)
    report = col.ingest(folder, adapt=True, progress=False, adapt_config=AdaptConfig(min_steps=25, max_steps=25))
    own_id = report.adapt["model_id"]
    assert own_id != enc.model_id
    searchers = open_collections(enc, ["adapted"], path=str(tmp_path / "store"), own_model=True)
    served, name = served_encoder(enc, searchers)
    assert served.model_id == own_id and own_id in name and served.backbone is enc.backbone  # shared backbone
    assert served_encoder(enc, searchers, "given/model")[0] is enc  # an explicit --model is served as given
    text = list(scifact_slice["docs"].values())[3]
    try:
        with serve_in_thread(create_app(served, searchers, ServeConfig(warmup=False))) as url:
            got = httpx.post(url + "/embed_sparse", json={"inputs": [text]}).json()[0]
            expected = served.encode_document([text])[0]
            assert [e["index"] for e in got] == expected.indices.tolist()
            body = httpx.post(url + "/search", json={"query": text[:200], "top_k": 3}).json()
            assert body["reason"] == "fused" and {h["served_by"] for h in body["hits"]} == {"fused"}
            lexical = httpx.post(url + "/search", json={"query": text[:200], "top_k": 3, "mode": "lexical"}).json()
            assert lexical["hits"] and {h["served_by"] for h in lexical["hits"]} == {"lexical"}
            bad = httpx.post(url + "/search", json={"query": "x", "mode": "hybrid"})
            assert_json_error(bad, 422)
            assert "hybrid" in bad.json()["error"]
    finally:
        for s in searchers.values():
            s.close()
