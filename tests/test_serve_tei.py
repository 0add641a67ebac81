"""The server against text-embeddings-inference's and OpenAI's published API shapes, driven by the real
clients (``huggingface_hub.InferenceClient``, ``openai``) over loopback: truncation, ``normalize``,
``dimensions``, TEI's statuses and ``error_type`` names, ``/info``, ``/v1/embeddings`` and ``/metrics``.

The TEI facts below are from TEI's ``docs/openapi.json`` and ``router/src/lib.rs`` (``ErrorType`` and its
status mapping), restated here as the conformance target.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import os
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest

from csr_adapter.server import ServeConfig, create_app
from csr_adapter.server.testing import serve_in_thread

KEY = "tei-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUERY_K = 32
# TEI's ErrorType enum (serialised as written) and the status each maps to
TEI_ERROR_TYPES = {"Unhealthy": 503, "Backend": 424, "Overloaded": 429, "Validation": 413, "Tokenizer": 422,
                   "Empty": 400}
TEI_INFO_REQUIRED = {"model_id": str, "model_dtype": str, "model_type": dict, "max_concurrent_requests": int,
                     "max_input_length": int, "max_batch_tokens": int, "max_client_batch_size": int,
                     "auto_truncate": bool, "tokenization_workers": int, "version": str}
LONG = " ".join(f"word{i}" for i in range(400))  # > 256 tokens


@pytest.fixture(scope="module")
def enc(encoder):
    """The shipped model with asymmetric codes (query_k) on a copy of its config: the session one is untouched."""
    wide = copy.copy(encoder)
    wide.config = dataclasses.replace(encoder.config, query_k=QUERY_K)
    return wide


@pytest.fixture(scope="module")
def base(enc):
    config = ServeConfig(api_key=KEY, max_inputs=8, max_chars=5000, warmup=False)
    with serve_in_thread(create_app(enc, config=config, model_name="csr-test-model")) as url:
        yield url


@pytest.fixture(scope="module")
def client(base):
    with httpx.Client(base_url=base, timeout=60, headers=AUTH) as c:
        yield c


def tei_error(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "error_type"} and isinstance(body["error"], str)
    assert body["error_type"] == error_type
    return body


# -- TEI request fields ------------------------------------------------------------------------------------
def test_truncate_false_refuses_too_long_input_with_413(client, enc):
    for route in ("/embed", "/embed_sparse"):
        body = tei_error(client.post(route, json={"inputs": ["short", LONG], "truncate": False}), 413, "Validation")
        assert "must have less than 256 tokens" in body["error"] and "inputs[1]" in body["error"]
        assert client.post(route, json={"inputs": LONG, "truncate": True}).status_code == 200
    assert client.post("/embed", json={"inputs": LONG}).status_code == 200  # omitted: the server's auto_truncate
    assert client.get("/info").json()["auto_truncate"] is True


def test_truncation_direction_picks_the_end_that_is_kept(client):
    def embed(text: str, direction: str) -> np.ndarray:
        r = client.post("/embed", json={"inputs": text, "truncate": True, "truncation_direction": direction})
        assert r.status_code == 200, r.text
        return np.asarray(r.json()[0])

    head, tail = "alpha beta gamma " * 20, " delta epsilon zeta" * 20
    np.testing.assert_allclose(embed(head + LONG, "left"), embed(LONG, "Left"), atol=1e-5)  # TEI's casing too
    np.testing.assert_allclose(embed(LONG + tail, "right"), embed(LONG, "Right"), atol=1e-5)
    assert np.abs(embed(head + LONG, "right") - embed(head + LONG, "left")).max() > 1e-3
    tei_error(client.post("/embed", json={"inputs": "x", "truncation_direction": "middle"}), 422, "Validation")


def test_normalize_false_returns_the_pooled_vectors(client, enc):
    texts = ["one text", "another, longer text about retrieval"]
    raw = np.asarray(client.post("/embed", json={"inputs": texts, "normalize": False}).json())
    unit = np.asarray(client.post("/embed", json={"inputs": texts}).json())
    norms = np.linalg.norm(raw, axis=1)
    assert np.all(np.abs(norms - 1) > 0.1), norms
    np.testing.assert_allclose(raw / norms[:, None], unit, atol=1e-5)
    np.testing.assert_allclose(unit, enc.encode_dense(texts), atol=1e-5)


def test_dimensions_full_d_or_a_clear_422(client, enc):
    full = client.post("/embed", json={"inputs": "x", "dimensions": enc.d}).json()
    assert len(full[0]) == enc.d
    body = tei_error(client.post("/embed", json={"inputs": "x", "dimensions": 128}), 422, "Validation")
    assert "Matryoshka" in body["error"] and str(enc.d) in body["error"]
    tei_error(client.post("/embed", json={"inputs": "x", "dimensions": 0}), 422, "Validation")


def test_embed_sparse_role_query_gives_the_wider_query_codes(client, enc):
    text = "does vitamin D prevent fractures"
    doc = client.post("/embed_sparse", json={"inputs": text}).json()[0]
    query = client.post("/embed_sparse", json={"inputs": text, "role": "query"}).json()[0]
    assert len(doc) == enc.k and enc.k < len(query) <= QUERY_K
    expected = enc.sparsify(enc.encode_dense([text]), role="query")[0]
    assert [e["index"] for e in query] == expected.indices.tolist()
    assert {e["index"] for e in doc} <= {e["index"] for e in query}
    tei_error(client.post("/embed_sparse", json={"inputs": text, "role": "passage"}), 422, "Validation")


# -- TEI statuses and error bodies ---------------------------------------------------------------------------
def test_errors_use_tei_statuses_and_error_type_names(client):
    cases = [(client.post("/embed", json={"inputs": []}), 400, "Empty"),
             (client.post("/embed_sparse", json={"inputs": [""]}), 400, "Empty"),
             (client.post("/embed", json={"inputs": ["x"] * 9}), 413, "Validation"),
             (client.post("/", json={"inputs": LONG, "truncate": False}), 413, "Validation")]
    for response, status, error_type in cases:
        tei_error(response, status, error_type)
        assert TEI_ERROR_TYPES[error_type] == status  # the pairing TEI uses


def test_info_has_teis_fields_and_ours_apart(client, enc):
    info = client.get("/info").json()
    for key, kind in TEI_INFO_REQUIRED.items():
        assert isinstance(info[key], kind), key
    assert info["model_id"] == "csr-test-model" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == enc.backbone.max_seq_length and info["max_client_batch_size"] == 8
    ours = info["csr_adapter"]
    assert (ours["d"], ours["h"], ours["k"], ours["query_k"]) == (enc.d, enc.h, enc.k, QUERY_K)


# -- OpenAI ------------------------------------------------------------------------------------------------
def test_openai_client_gets_the_dense_embedding(base, enc):
    openai = pytest.importorskip("openai")
    oai = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)
    texts = ["hello world", "sparse retrieval"]
    for fmt in ("float", "base64"):  # the client asks for base64 by default and decodes it
        reply = oai.embeddings.create(input=texts, model="anything", encoding_format=fmt)
        got = np.asarray([d.embedding for d in reply.data]) if fmt == "float" else None
        if fmt == "base64":
            got = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in reply.data])
        np.testing.assert_allclose(got, enc.encode_dense(texts), atol=1e-5)
        assert [d.index for d in reply.data] == [0, 1] and reply.model == "anything"
        assert reply.usage.prompt_tokens == reply.usage.total_tokens > len(texts)
    default = oai.embeddings.create(input="hello world", model="m")
    np.testing.assert_allclose(default.data[0].embedding, enc.encode_dense(["hello world"])[0], atol=1e-5)
    with pytest.raises(openai.UnprocessableEntityError):
        oai.embeddings.create(input="x", model="m", dimensions=64)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).embeddings.create(input="x", model="m")


def test_openai_route_answers_errors_in_openais_shape(client):
    r = client.post("/v1/embeddings", json={"input": []})
    assert r.status_code == 400
    assert r.json()["error"] == {"message": "`inputs` cannot be empty", "type": "Empty", "param": None, "code": 400}
    assert {k: v for k, v in r.json().items() if k != "error"} == {  # TEI's OpenAICompatErrorResponse beside it
        "message": "`inputs` cannot be empty", "code": 400, "type": "Empty", "error_type": "Empty"}
    bad = client.post("/v1/embeddings", json={"input": [1, 2]})
    assert bad.status_code == 422 and bad.json()["error"]["type"] == "Validation"
    unauthorized = httpx.post(str(client.base_url) + "/v1/embeddings", json={"input": "x"})
    assert unauthorized.status_code == 401 and unauthorized.json()["error"]["type"] == "Unauthorized"


# -- huggingface_hub ---------------------------------------------------------------------------------------
def test_inference_client_refuses_loopback_too_while_hub_offline(base):
    """Why the README tells the client process to run without HF_HUB_OFFLINE (huggingface_hub's own guard)."""
    hub = pytest.importorskip("huggingface_hub")
    if not hub.constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE is not set in this process")
    with pytest.raises(hub.errors.OfflineModeIsEnabled):
        hub.InferenceClient(model=base, token=KEY).feature_extraction("hello")


def test_inference_client_without_hub_offline_as_the_readme_says(base, enc):
    """The README's recipe, run as a user would: a client process without HF_HUB_OFFLINE, model=<server URL>
    (it contacts only that URL; this box has no network, so a Hub call would fail the test)."""
    pytest.importorskip("huggingface_hub")
    script = (
        "import sys, json\n"
        "from huggingface_hub import InferenceClient\n"
        "c = InferenceClient(model=sys.argv[1], token=sys.argv[2])\n"
        "v = c.feature_extraction(['hello world', 'sparse'], normalize=False, truncate=True,\n"
        "                         truncation_direction='left')\n"
        "u = c.feature_extraction('hello world')\n"
        "print(json.dumps([v.tolist(), u.tolist()]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run([sys.executable, "-c", script, base, KEY], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    raw, unit = json.loads(done.stdout)
    expected = enc.encode_dense(["hello world", "sparse"])
    raw = np.asarray(raw)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(unit).reshape(-1), expected[0], atol=1e-5)


# -- Prometheus ----------------------------------------------------------------------------------------------
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
                    r'(-?[0-9.e+]+|\+Inf|NaN)$')


def test_metrics_in_prometheus_text_format(client):
    client.post("/embed", json={"inputs": ["a", "b"]})
    client.post("/embed", json={"inputs": []})
    client.get("/no-such-route")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for line in r.text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        assert SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['csr_adapter_requests_total{route="/embed",status="200"}'] >= 1
    assert samples['csr_adapter_requests_total{route="/embed",status="400"}'] >= 1
    assert samples['csr_adapter_requests_total{route="other",status="404"}'] >= 1
    assert samples['csr_adapter_request_duration_seconds_count{route="/embed"}'] >= 2
    buckets = [v for k, v in samples.items() if k.startswith("csr_adapter_batch_texts_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == samples["csr_adapter_batch_texts_count"] >= 1
    assert samples["csr_adapter_queue_texts"] == 0 and "csr_adapter_queue_rejected_total" in samples
    unauthorized = httpx.get(str(client.base_url) + "/metrics")
    assert unauthorized.status_code == 401  # behind the API key like every route but /health


def test_auto_truncate_off_is_teis_default_behaviour(encoder):
    from csr_adapter.server.service import Service

    strict = Service(encoder, {}, ServeConfig(auto_truncate=False, warmup=False))
    assert strict.truncation(None, "Left") == {"truncate": False, "truncation_side": "left"}
    assert strict.truncation(True, "right") == {"truncate": True, "truncation_side": "right"}
