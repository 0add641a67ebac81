"""Property tests: schemathesis generates requests from the live server's OpenAPI schema; none may get a 500.

Valid (positive) and invalid (negative) bodies per operation, with a bounded number of examples each.
(schemathesis' ``from_fixture`` pytest plugin breaks on pytest 9, so each operation's strategy is driven
through hypothesis' ``@given`` directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, status_code_conformance

from csr_adapter.server import ServeConfig, create_app
from csr_adapter.server.collections import open_collections
from csr_adapter.server.testing import serve_in_thread

KEY = "schema-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_EXAMPLES = 40  # per operation and mode: bounded, a few seconds on 2 cores
OPERATIONS = [("POST", "/embed_sparse"), ("POST", "/embed"), ("POST", "/"), ("POST", "/v1/embeddings"),
              ("POST", "/search"), ("GET", "/health"), ("GET", "/info"), ("GET", "/metrics")]


@pytest.fixture(scope="module")
def live(encoder, tmp_path_factory):
    """The app over a real ingested collection (Qdrant Edge + FAISS fallback), with auth on."""
    from test_serve_collections import ingest_docs

    searchers = open_collections(encoder, ["docs"], path=ingest_docs(tmp_path_factory))
    config = ServeConfig(api_key=KEY, max_inputs=8, max_chars=500, max_top_k=50)
    try:
        with serve_in_thread(create_app(encoder, searchers, config)) as url:
            yield url, schemathesis.openapi.from_url(url + "/openapi.json", headers=AUTH)
    finally:
        for searcher in searchers.values():
            searcher.close()


def test_schema_lists_every_route(live):
    _, schema = live
    found = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert set(OPERATIONS) <= found


CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST"]  # GETs take no input to break


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{p}-{g.value}" for _, p, g in CASES])
def test_no_server_errors(live, method, path, mode):
    url, schema = live
    operation = schema[path][method]
    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        statuses.append(case.call_and_validate(base_url=url, headers=AUTH, checks=checks, timeout=30).status_code)

    run()
    assert statuses and all(s < 500 for s in statuses)
    if mode is GenerationMode.NEGATIVE:  # (a case whose only fault is its auth header gets ours: 200)
        assert any(s in (413, 422) for s in statuses), statuses
    else:
        assert 200 in statuses, statuses
