"""schemathesis against the OpenAPI of both transfer APIs, over the real store (DAG runs in the
test Airflow database) and the real authentication of each:

* the standalone ``lclstream-api``: a real uvicorn server over certified mutual TLS on
  127.0.0.1, called with alice's client certificate;
* the API mounted in Airflow's API server (Airflow's own ``create_app``, behind its JWT).

Each operation gets ``CASES`` positive and ``CASES`` negative cases (bounded, no shrinking, no
example database). Every response must be no 5xx, a documented status code, the documented
content type and match its response schema. The case counts are printed for
docs/reliability.md.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dags.dag_runner import register
from tests.integration.test_api_airflow import stub_transfer_dag, token
from tests.integration.test_api_mtls import free_port, identity, trust_server

pytestmark = pytest.mark.airflow
CASES = 40  # per operation and generation mode: 4 operations x 2 modes x 40 = 320 per API


def fuzz(
    schema_doc: dict[str, Any], send: Callable[[dict[str, Any]], httpx.Response]
) -> Counter[int]:
    """Run the bounded schemathesis cases; return the count per status (raises on a failure)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )
    from schemathesis.generation import GenerationMode

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_dict(schema_doc)
    statuses: Counter[int] = Counter()
    skipped_negative: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=CASES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(operation.as_strategy(generation_mode=mode))
            def one(case: Any) -> None:
                response = send(case.as_transport_kwargs(base_url="http://api"))
                statuses[response.status_code] += 1
                case.validate_response(response, checks=checks)

            try:
                one()
            except Unsatisfiable:
                # an operation with no parameters and no body (GET /v1/warm-pools over
                # certificate identities): there is no input to make invalid
                if mode is not GenerationMode.NEGATIVE:
                    raise
                skipped_negative.append(operation.label)
    if skipped_negative:
        print(f"no negative cases possible (no parameters, no body): {skipped_negative}")
    return statuses


def as_httpx(kwargs: dict[str, Any]) -> dict[str, Any]:
    """requests-style kwargs (what schemathesis builds) as httpx.Client.request kwargs."""
    out: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"].removeprefix("http://api"),
        "headers": kwargs.get("headers") or {},
        "params": kwargs.get("params") or None,
        "cookies": kwargs.get("cookies") or None,
    }
    if "json" in kwargs:
        out["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        out["content"] = data.encode() if isinstance(data, str) else data
    return out


@pytest.fixture(scope="module")
def stub_dag(airflow_db: Path) -> None:
    register(stub_transfer_dag())


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory, stub_dag: None) -> Iterator[Any]:
    from airflow_provider_lclstream.api.airflow_store import AirflowTransferStore
    from airflow_provider_lclstream.api.server import (
        ClientAuthorities,
        create_standalone_app,
        known_clients_dir,
        make_server,
    )

    root = tmp_path_factory.mktemp("fuzz-pki")
    server_id = identity(root, "lclstream-api", hosts=["127.0.0.1", "localhost"])
    alice = identity(root, "alice")
    server_id.add_client("alice", alice.signer().certificate)
    trust_server(alice, server_id)
    app = create_standalone_app(
        AirflowTransferStore(), ClientAuthorities.load(known_clients_dir(server_id.config))
    )
    port = free_port()
    server = make_server(app, "127.0.0.1", port, server_id.config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    with alice.Client(f"https://127.0.0.1:{port}") as http:
        yield type("Standalone", (), {"app": app, "http": http})
    server.should_exit = True
    thread.join(5)


def test_fuzz_standalone_api(standalone: Any) -> None:
    statuses = fuzz(
        standalone.app.openapi(),
        lambda kwargs: standalone.http.request(**as_httpx(kwargs)),
    )
    print(f"standalone lclstream-api: {statuses.total()} cases, 0 failures: {dict(statuses)}")
    assert statuses.total() >= CASES * 4 and statuses[201] > 0  # transfers were created


def test_fuzz_airflow_mounted_api(stub_dag: None) -> None:
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    from airflow_provider_lclstream.api.airflow_app import create_airflow_app
    from airflow_provider_lclstream.transfer.urls import URL_PREFIX

    app = create_app("core")
    try:
        client = TestClient(app)
        auth = token("alice")

        def send(kwargs: dict[str, Any]) -> httpx.Response:
            request = as_httpx(kwargs)
            request["url"] = URL_PREFIX + request["url"]
            request["headers"] = {**request["headers"], **auth}
            return client.request(**request)

        statuses = fuzz(create_airflow_app().openapi(), send)
    finally:
        purge_cached_app()
    print(f"Airflow-mounted API: {statuses.total()} cases, 0 failures: {dict(statuses)}")
    assert statuses.total() >= CASES * 4 and statuses[201] > 0
