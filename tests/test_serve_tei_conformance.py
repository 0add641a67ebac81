"""Conformance of the live server with text-embeddings-inference's published API, checked by machine.

``tei_openapi_subset.json`` is a JSON Schema transcription of TEI's ``docs/openapi.json`` (1.7.1) for the
routes csr-adapter serves (see its ``x-source``). Every response below, from the real server over loopback
HTTP, must have a status TEI documents for its route and a body that validates against the schema TEI gives
for that status. Request side: requests built from the request schemas' fields (each optional field with
each of its values) validate against TEI's request schema and are answered 200, or, where csr-adapter
documents a TEI input as unsupported (token-id inputs), refused with a documented 4xx and TEI's error shape.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from csr_adapter.server import ServeConfig, create_app
from csr_adapter.server.testing import serve_in_thread

SUBSET = json.loads(Path(__file__).with_name("tei_openapi_subset.json").read_text())
ROUTES: dict[str, dict[str, Any]] = SUBSET["x-routes"]
KEY = "tei-conformance-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_INPUTS = 8
LONG = " ".join(f"word{i}" for i in range(400))  # > 256 tokens
# Input / InputType: a text, a list of texts, token ids, a list mixing both
INPUT_SAMPLES = ["what is a sparse embedding?", ["first text", "second text"], [101, 7592, 102],
                 [[101, 7592, 102], "a text"]]
STRING_SAMPLES = {"prompt_name": "query", "model": "any-model-name", "user": "user-1"}  # query: the model's prompt
# TEI's ErrorType -> status pairs that hold for every route (router/src/lib.rs); 422 is also a malformed body
TEI_PAIRS = {400: "Empty", 413: "Validation", 429: "Overloaded"}


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$defs": SUBSET["$defs"], "$ref": f"#/$defs/{name}"})


def schema_errors(name: str, instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"[:300]
            for e in validator(name).iter_errors(instance)]


def conforms(route: str, response: httpx.Response) -> Any:
    """Assert ``response`` has a status TEI documents for ``route`` and a body matching its schema."""
    responses = ROUTES[route]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{route} answered {status} (TEI documents {sorted(responses)}): {response.text[:300]}"
    name = responses[status]
    if name is None:  # documented without a body schema (/health 200)
        return None
    content_type = response.headers.get("content-type", "")
    if name == "MetricsText":
        assert content_type.startswith("text/plain"), content_type
        body: Any = response.text
    else:
        assert content_type.startswith("application/json"), content_type
        body = response.json()
    errors = schema_errors(name, body)
    assert not errors, f"{route} {status} is not TEI's {name}: {errors[:5]}"
    return body


def is_error_type_consistent(route: str, response: httpx.Response) -> None:
    """The ``error_type`` TEI pairs with 400 / 413 / 429; under ``/v1/`` also TEI's wire key ``type``."""
    body = response.json()
    if route == "POST /v1/embeddings":
        assert body["code"] == response.status_code
        assert body["type"] == body["error_type"]  # TEI's serde rename: published error_type, sent as type
        error_type = body["error_type"]
    else:
        error_type = body["error_type"]
    if response.status_code in TEI_PAIRS:
        assert error_type == TEI_PAIRS[response.status_code], (route, response.status_code, error_type)


def samples(name: str, schema: dict[str, Any]) -> list[Any]:
    """Example values for one request field, from its schema (``$ref``, ``enum``, type lists with null)."""
    if name in ("inputs", "input"):
        return INPUT_SAMPLES
    if "$ref" in schema:
        schema = SUBSET["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if "enum" in schema:
        return list(schema["enum"])
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    out: list[Any] = []
    for kind in types:
        if kind == "boolean":
            out += [True, False]
        elif kind == "string":
            out.append(STRING_SAMPLES[name])
        else:
            assert kind == "null", (name, kind)
            out.append(None)
    return out


def example_requests(request_schema: str) -> list[dict[str, Any]]:
    """The required fields alone (each input form), then each optional field with each of its values, then
    every optional field at once."""
    schema = SUBSET["$defs"][request_schema]
    (required,) = schema["required"]
    optional = {name: samples(name, prop) for name, prop in schema["properties"].items() if name != required}
    requests = [{required: value} for value in samples(required, schema["properties"][required])]
    requests += [{required: "one text", name: value} for name, values in optional.items() for value in values]
    requests.append({required: ["one text", "two"], **{name: values[0] for name, values in optional.items()}})
    return requests


def has_token_ids(value: Any) -> bool:
    """A token-id input (a list of integers), alone or in a batch: csr-adapter refuses those (README)."""
    if isinstance(value, list):
        return (bool(value) and all(isinstance(v, int) for v in value)) or any(isinstance(v, list) for v in value)
    return False


@pytest.fixture(scope="module")
def base(encoder):
    config = ServeConfig(api_key=KEY, max_inputs=MAX_INPUTS, max_chars=5000, warmup=False)
    with serve_in_thread(create_app(encoder, config=config, model_name="csr-conformance")) as url:
        yield url


@pytest.fixture(scope="module")
def client(base):
    with httpx.Client(base_url=base, timeout=60, headers=AUTH) as c:
        yield c


# -- the subset itself --------------------------------------------------------------------------------------
def test_subset_is_valid_json_schema_and_catches_wrong_shapes():
    Draft202012Validator.check_schema(SUBSET)
    for route in ROUTES.values():
        for name in [route.get("request"), *route["responses"].values()]:
            if name is not None:
                assert name in SUBSET["$defs"], name
                schema_errors(name, None)  # every $ref resolves
    # the validation is live: shapes TEI does not answer are refused
    assert schema_errors("ErrorResponse", {"error": "x", "error_type": "validation"})  # TEI's casing
    assert schema_errors("ErrorResponse", {"message": "x", "type": "Validation"})
    assert schema_errors("EmbedSparseResponse", [[{"index": -1, "value": 0.5}]])
    assert schema_errors("EmbedResponse", [[0.1, "0.2"]])
    assert schema_errors("Info", {"model_id": "m"})
    assert schema_errors("OpenAICompatErrorResponse", {"error": {"message": "x", "type": "Empty", "code": 400}})
    assert schema_errors("EmbedRequest", {"inputs": "x", "truncation_direction": "right"})  # TEI: Left/Right
    assert not schema_errors("ErrorResponse", {"error": "x", "error_type": "Empty"})


# -- request side: TEI's request fields --------------------------------------------------------------------
@pytest.mark.parametrize("route", ["POST /embed", "POST /embed_sparse", "POST /v1/embeddings"])
def test_requests_built_from_teis_request_schema(client, route):
    request_schema = ROUTES[route]["request"]
    requests = example_requests(request_schema)
    fields = set(itertools.chain.from_iterable(requests))
    assert fields == set(SUBSET["$defs"][request_schema]["properties"])  # every documented field is exercised
    path = route.split(" ", 1)[1]
    for request in requests:
        assert not schema_errors(request_schema, request), request  # a request TEI accepts
        response = client.post(path, json=request)
        body = conforms(route, response)
        texts = request.get("inputs", request.get("input"))
        if has_token_ids(texts):
            assert response.status_code == 422, (request, response.text)
            is_error_type_consistent(route, response)
            continue
        assert response.status_code == 200, (request, response.text)
        rows = body["data"] if route == "POST /v1/embeddings" else body
        assert len(rows) == (1 if isinstance(texts, str) else len(texts)), request


def test_post_root_is_embed(client):
    """``POST /`` is TEI's route for the model's task (not in openapi.json); for an embedding model, /embed."""
    conforms("POST /embed", client.post("/", json={"inputs": ["a", "b"], "normalize": False}))


# -- documented errors -------------------------------------------------------------------------------------
TOO_MANY = ["x"] * (MAX_INPUTS + 1)
ERROR_CASES = [
    ("POST /embed", {"inputs": []}, 400),
    ("POST /embed", {"inputs": ["a", ""]}, 400),
    ("POST /embed", {"inputs": TOO_MANY}, 413),
    ("POST /embed", {"inputs": ["short", LONG], "truncate": False}, 413),
    ("POST /embed", {}, 422),
    ("POST /embed", {"inputs": 5}, 422),
    ("POST /embed", {"inputs": "x", "truncation_direction": "Middle"}, 422),
    ("POST /embed", {"inputs": "x", "normalize": "yes"}, 422),
    ("POST /embed", {"inputs": "x", "truncate": "yes"}, 422),
    ("POST /embed", b"{not json", 422),
    ("POST /embed_sparse", {"inputs": ""}, 400),
    ("POST /embed_sparse", {"inputs": TOO_MANY}, 413),
    ("POST /embed_sparse", {"inputs": LONG, "truncate": False}, 413),
    ("POST /embed_sparse", {"inputs": None}, 422),
    ("POST /embed_sparse", {"inputs": "x", "prompt_name": 3}, 422),
    ("POST /v1/embeddings", {"input": []}, 400),
    ("POST /v1/embeddings", {"input": TOO_MANY}, 413),
    ("POST /v1/embeddings", {}, 422),
    ("POST /v1/embeddings", {"input": "x", "encoding_format": "binary"}, 422),
    ("POST /v1/embeddings", b"[", 422),
]


@pytest.mark.parametrize(("route", "body", "status"), ERROR_CASES,
                         ids=[f"{r.split()[1]}-{s}-{i}" for i, (r, _, s) in enumerate(ERROR_CASES)])
def test_documented_errors_have_teis_status_and_shape(client, route, body, status):
    path = route.split(" ", 1)[1]
    if isinstance(body, bytes):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    conforms(route, response)
    is_error_type_consistent(route, response)


def test_overloaded_is_teis_429(encoder):
    """A request that waits past the server's timeout: TEI's 429 ``Overloaded`` on every embedding route."""
    config = ServeConfig(timeout_s=0.001, warmup=False)
    with serve_in_thread(create_app(encoder, config=config)) as url, httpx.Client(base_url=url, timeout=60) as c:
        for route, body in [("POST /embed", {"inputs": ["a"] * 8}), ("POST /embed_sparse", {"inputs": ["a"] * 8}),
                            ("POST /v1/embeddings", {"input": ["a"] * 8})]:
            response = c.post(route.split(" ", 1)[1], json=body)
            assert response.status_code == 429, (route, response.text)
            conforms(route, response)
            is_error_type_consistent(route, response)


# -- GET routes --------------------------------------------------------------------------------------------
def test_info_health_and_metrics(client, encoder):
    info = conforms("GET /info", client.get("/info"))
    assert info["model_id"] == "csr-conformance" and info["max_client_batch_size"] == MAX_INPUTS
    assert info["max_input_length"] == encoder.backbone.max_seq_length
    assert conforms("GET /health", httpx.get(str(client.base_url) + "/health")) is None  # no auth, as TEI
    assert "csr_adapter_requests_total" in conforms("GET /metrics", client.get("/metrics"))
