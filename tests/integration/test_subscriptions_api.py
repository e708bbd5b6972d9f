"""``/v1/subscriptions`` in both deployments over the real store (Airflow Variables in the test
metadata database): the plugin inside Airflow's API server (Airflow JWT, roles) and the standalone
``lclstream-api`` over certified mutual TLS; both see the same subscriptions and audit."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from airflow_provider_lclstream.config.subscriptions import (
    AUDIT_VARIABLE,
    RUN_START_DAG_ID,
    RUN_START_TASK_ID,
    SUBSCRIPTIONS_VARIABLE,
    UNMATCHED_XCOM_KEY,
    SubscriptionBook,
)
from tests.dags.dag_runner import register
from tests.integration.test_api_airflow import airflow_app, client, token  # noqa: F401
from tests.integration.test_api_mtls import free_port, pki  # noqa: F401

pytestmark = pytest.mark.airflow
SPEC = {
    "match": {"experiment": "mfxl1023"},
    "template": {"detector_name": "jungfrau4M", "mode": "calib"},
}


@pytest.fixture(autouse=True)
def empty_store(airflow_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No subscriptions, no audit; alice manages mfxl10*, bob xpptut15."""
    from airflow.models.variable import Variable

    for key in (SUBSCRIPTIONS_VARIABLE, AUDIT_VARIABLE):
        Variable.delete(key)
    monkeypatch.setenv(
        "AIRFLOW__LCLSTREAM__EXPERIMENT_MANAGERS",
        json.dumps({"alice": "mfxl10[0-9]+", "bob": "xpptut15"}),
    )


def stored_book() -> SubscriptionBook:
    from airflow.models.variable import Variable

    return SubscriptionBook.parse(Variable.get(SUBSCRIPTIONS_VARIABLE, default_var=None))


def test_plugin_crud_is_stored_in_the_variable_with_its_audit(client: TestClient) -> None:  # noqa: F811
    from airflow.models.variable import Variable

    alice = token("alice")
    r = client.post("/lclstream/v1/subscriptions", json=SPEC, headers=alice)
    assert r.status_code == 201, r.text
    sid = r.json()["subscription"]["id"]
    [stored] = stored_book().subscriptions
    assert (stored.id, stored.owner, stored.template["mode"]) == (sid, "alice", "calib")

    r = client.patch(f"/lclstream/v1/subscriptions/{sid}", json={"enabled": False}, headers=alice)
    assert r.status_code == 200, r.text
    assert stored_book().subscriptions[0].enabled is False
    audit = json.loads(Variable.get(AUDIT_VARIABLE))
    assert [(e["action"], e["who"]) for e in audit] == [("create", "alice"), ("disable", "alice")]
    listed = client.get(f"/lclstream/v1/subscriptions/{sid}/audit", headers=alice).json()
    assert [e["action"] for e in listed["data"]] == ["disable", "create"]

    # an Airflow user who is not alice sees nothing of hers; an Airflow admin (may edit
    # Variables) sees and manages every subscription
    assert client.get(f"/lclstream/v1/subscriptions/{sid}", headers=token("bob")).status_code == 404
    admin = token("ada", "admin")
    assert (
        client.get("/lclstream/v1/subscriptions?all_users=true", headers=admin).json()["count"] == 1
    )
    wide = {**SPEC, "match": {"instrument": "cxi"}}
    assert client.post("/lclstream/v1/subscriptions", json=wide, headers=admin).status_code == 201
    assert client.post("/lclstream/v1/subscriptions", json=wide, headers=alice).status_code == 403
    assert client.delete(f"/lclstream/v1/subscriptions/{sid}", headers=alice).status_code == 200
    assert [s.id for s in stored_book().subscriptions] == ["sub2"]


def test_plugin_refuses_without_airflow_auth_and_validates(client: TestClient) -> None:  # noqa: F811
    assert client.get("/lclstream/v1/subscriptions").status_code == 401
    assert client.post("/lclstream/v1/subscriptions", json=SPEC).status_code == 401
    viewer = token("val", "viewer")
    assert client.post("/lclstream/v1/subscriptions", json=SPEC, headers=viewer).status_code == 403
    bad = {**SPEC, "template": {"detector_name": "a b"}}
    r = client.post("/lclstream/v1/subscriptions", json=bad, headers=token("alice"))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "template.detector_name"
    assert stored_book().subscriptions == []


def test_unmatched_run_starts_are_read_from_the_run_start_xcoms(client: TestClient) -> None:  # noqa: F811
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.xcom import XComModel
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    with DAG(RUN_START_DAG_ID, schedule=None, start_date=dt.datetime(2025, 1, 1)) as dag:
        EmptyOperator(task_id=RUN_START_TASK_ID)
    register(dag)
    before = client.get("/lclstream/v1/subscriptions/unmatched", headers=token("bob")).json()
    stamp = time.time_ns()
    run_id, later = f"test_unmatched_{stamp}", f"test_unmatched_{stamp}_later"
    events = [
        {"kind": "run_start", "experiment": "cxil0001", "run": r, "topic": "runs",
         "partition": 0, "offset": stamp + r}
        for r in (1, 2)
    ]  # fmt: skip
    with create_session() as session:
        for dag_run_id, taken in ((run_id, events), (later, events[1:])):
            trigger_dag(RUN_START_DAG_ID, triggered_by=DagRunTriggeredByType.TEST,
                        run_id=dag_run_id, session=session)  # fmt: skip
            session.flush()
            XComModel.set(UNMATCHED_XCOM_KEY, taken, dag_id=RUN_START_DAG_ID,
                          task_id=RUN_START_TASK_ID, run_id=dag_run_id,
                          session=session)  # fmt: skip
    after = client.get("/lclstream/v1/subscriptions/unmatched", headers=token("bob")).json()
    # run 2's message was taken by two DAG runs (a late event): counted once
    assert after["count"] == before["count"] + 2
    latest = {(e["experiment"], e["run"], e["offset"]) for e in after["data"][:2]}
    assert latest == {("cxil0001", 1, stamp + 1), ("cxil0001", 2, stamp + 2)}
    assert {e["dag_run_id"] for e in after["data"][:2]} <= {run_id, later}


# ------------------------------------------------------------------ standalone, mutual TLS


@pytest.fixture
def standalone(pki: dict[str, Any]) -> Any:  # noqa: F811
    from airflow_provider_lclstream.api.airflow_subscriptions import AirflowSubscriptionStore
    from airflow_provider_lclstream.api.server import (
        ClientAuthorities,
        create_standalone_app,
        known_clients_dir,
        make_server,
    )
    from airflow_provider_lclstream.config.consumers import ConsumerTemplates
    from airflow_provider_lclstream.hooks import settings
    from tests.unit.api.fakes import MemoryTransferStore

    port = free_port()
    authorities = ClientAuthorities.load(known_clients_dir(pki["server"].config))
    app = create_standalone_app(
        MemoryTransferStore(),
        authorities,
        admins=["root"],
        consumer_templates=ConsumerTemplates,
        subscriptions=AirflowSubscriptionStore(),
        experiment_managers=settings.experiment_managers,
    )
    server = make_server(app, "127.0.0.1", port, pki["server"].config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"https://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def test_standalone_and_plugin_share_the_store(
    pki: dict[str, Any],  # noqa: F811
    standalone: str,
    client: TestClient,  # noqa: F811
) -> None:
    with pki["alice"].Client(standalone) as alice:
        r = alice.post("/v1/subscriptions", json=SPEC)
        assert r.status_code == 201, r.text
        sid = r.json()["subscription"]["id"]
        assert r.json()["subscription"]["owner"] == "alice"  # the name her CA was added under
        forbidden = alice.post(
            "/v1/subscriptions", json={**SPEC, "match": {"experiment": "xpptut15"}}
        )
        assert forbidden.status_code == 403
    with pki["bob"].Client(standalone) as bob:
        assert bob.get(f"/v1/subscriptions/{sid}").status_code == 404
        assert bob.get("/v1/subscriptions").json()["count"] == 0
    with pki["root"].Client(standalone) as root:
        r = root.patch(f"/v1/subscriptions/{sid}", json={"enabled": False})
        assert r.status_code == 200, r.text
    # the plugin inside Airflow reads the same Variable: alice sees root's change and its audit
    seen = client.get(f"/lclstream/v1/subscriptions/{sid}", headers=token("alice")).json()
    assert seen["enabled"] is False and seen["updated_by"] == "root"
    audit = client.get(f"/lclstream/v1/subscriptions/{sid}/audit", headers=token("alice")).json()
    assert [(e["action"], e["who"]) for e in audit["data"]] == [
        ("disable", "root"),
        ("create", "alice"),
    ]


def test_concurrent_changes_are_never_lost() -> None:
    """Writers in parallel threads: every subscription and every audit entry is kept, ids and
    audit numbers are unique (compare-and-swap on the Variable, retried)."""
    from concurrent.futures import ThreadPoolExecutor

    from airflow_provider_lclstream.api import subscriptions as service
    from airflow_provider_lclstream.api.airflow_subscriptions import AirflowSubscriptionStore
    from airflow_provider_lclstream.config.consumers import ConsumerTemplates
    from airflow_provider_lclstream.config.subscriptions import SubscriptionSpec

    store = AirflowSubscriptionStore()
    spec = SubscriptionSpec.model_validate(SPEC)

    def create(n: int) -> str:
        saved = service.create(store, spec, f"user{n % 3}", True, ConsumerTemplates(), {})
        return saved.subscription.id

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(create, range(12)))
    assert sorted(ids) == sorted(f"sub{i}" for i in range(1, 13))
    assert len(stored_book().subscriptions) == 12
    audit = store.audit()
    assert sorted(e.seq for e in audit) == list(range(1, 13))
    assert sorted(e.subscription for e in audit) == sorted(ids)
