"""The API as an Airflow 3.3 plugin: mounted by Airflow's own ``create_app``, behind its JWT auth,
over DAG runs of a stub ``lclstream_transfer`` DAG (same dag_id and task ids as the real one).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.dags.dag_runner import register
from tests.unit.api.fakes import SYNTHETIC, FakeBuffer

pytestmark = pytest.mark.airflow
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
SECRET = "S3CRET-token-value-91c2"


def stub_transfer_dag() -> Any:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG("lclstream_transfer", schedule=None, start_date=START) as dag:
        start_buffer = EmptyOperator(task_id="start_buffer")
        consumers = EmptyOperator(task_id="start_consumers")
        streamer = EmptyOperator(task_id="run_streamer")
        watch = EmptyOperator(task_id="watch_transfer")
        wait = EmptyOperator(task_id="wait_consumers")
        stop = EmptyOperator(task_id="stop_jobs").as_teardown(setups=[start_buffer])
        start_buffer >> consumers >> streamer >> watch >> wait >> stop
    return dag


@pytest.fixture(scope="module")
def airflow_app(airflow_db: Any) -> Any:
    from airflow.api_fastapi.app import create_app, purge_cached_app

    register(stub_transfer_dag())
    app = create_app("core")
    yield app
    purge_cached_app()


@pytest.fixture(scope="module")
def client(airflow_app: Any) -> TestClient:
    return TestClient(airflow_app)


def token(name: str, role: str = "user") -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=name, role=role))
    return {"Authorization": f"Bearer {jwt}"}


def set_task(run_id: str, task_id: str, state: str, xcom: Any = None) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == run_id))
        run.state = "running"
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
        )
        ti.state = state
        if xcom is not None:
            XComModel.set("return_value", xcom, dag_id=run.dag_id, task_id=task_id,
                          run_id=run_id, session=session)  # fmt: skip


def test_plugin_is_mounted_and_requires_airflow_auth(client: TestClient) -> None:
    assert client.get("/lclstream/v1/transfers").status_code == 401
    assert client.post("/lclstream/v1/transfers", json=SYNTHETIC).status_code == 401
    assert client.delete("/lclstream/v1/transfers/x").status_code == 401
    bad = client.get("/lclstream/v1/transfers", headers={"Authorization": f"Bearer {SECRET}"})
    assert bad.status_code == 403 and SECRET not in bad.text
    assert client.get("/lclstream/v1/transfers", headers=token("alice")).status_code == 200
    assert client.get("/lclstream/ui").status_code == 200


def test_viewer_cannot_start_transfers(client: TestClient) -> None:
    r = client.post("/lclstream/v1/transfers", json=SYNTHETIC, headers=token("val", "viewer"))
    assert r.status_code == 403


def test_transfer_lifecycle_over_dag_runs(client: TestClient) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    alice = token("alice")
    r = client.post("/lclstream/v1/transfers", json=SYNTHETIC, headers=alice)
    assert r.status_code == 201, r.text
    status = r.json()
    tid = status["id"]
    assert status["state"] == "queued" and status["user"] == "alice"
    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == tid))
        assert run.dag_id == "lclstream_transfer"
        assert run.conf == {"request": {"synthetic": True, "events": 100}, "user": "alice"}
        assert run.triggering_user_name == "alice"

    with FakeBuffer() as buffer:
        urls = {"input_url": "tcp://b:1", "output_url": "tcp://b:2", "metrics_url": buffer.url}
        set_task(tid, "start_buffer", "success", urls)
        set_task(tid, "run_streamer", "running")
        detail = client.get(f"/lclstream/v1/transfers/{tid}", headers=alice).json()
    assert detail["state"] == "ready" and detail["url"] == "tcp://b:2"
    assert detail["tasks"]["start_buffer"] == "success"
    assert detail["tasks"]["run_streamer"] == "running"
    assert detail["metrics"]["messages_in"] >= 1 and detail["metrics"]["producers_expected"] == 2

    listed = client.get("/lclstream/v1/transfers?state=ready", headers=alice).json()
    assert tid in [t["id"] for t in listed["data"]]
    bob = token("bob")
    assert client.get(f"/lclstream/v1/transfers/{tid}", headers=bob).status_code == 404
    assert client.delete(f"/lclstream/v1/transfers/{tid}", headers=bob).status_code == 404

    r = client.delete(f"/lclstream/v1/transfers/{tid}", headers=alice)
    assert r.status_code == 200, r.text
    detail = client.get(f"/lclstream/v1/transfers/{tid}", headers=alice).json()
    assert detail["state"] == "canceling"  # the teardown still has to run
    assert detail["tasks"]["run_streamer"] == "failed"
    assert detail["tasks"]["wait_consumers"] == "skipped"
    assert detail["tasks"]["stop_jobs"] is None
    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == tid))
        assert run.note.startswith("canceled by alice")


def test_cancel_queued_run(client: TestClient) -> None:
    """Nothing started: every work task is skipped; the teardown is left to the scheduler."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    alice = token("alice")
    tid = client.post("/lclstream/v1/transfers", json=SYNTHETIC, headers=alice).json()["id"]
    assert client.delete(f"/lclstream/v1/transfers/{tid}", headers=alice).status_code == 200
    detail = client.get(f"/lclstream/v1/transfers/{tid}", headers=alice).json()
    assert detail["state"] == "canceling"
    work = ["start_buffer", "start_consumers", "run_streamer", "watch_transfer", "wait_consumers"]
    assert {t: detail["tasks"][t] for t in work} == dict.fromkeys(work, "skipped")
    assert detail["tasks"]["stop_jobs"] is None
    with create_session() as session:  # what the scheduler does once the teardown has run
        run = session.scalar(select(DagRun).where(DagRun.run_id == tid))
        run.state = "failed"
    detail = client.get(f"/lclstream/v1/transfers/{tid}", headers=alice).json()
    assert detail["state"] == "canceled"
    assert client.delete(f"/lclstream/v1/transfers/{tid}", headers=alice).status_code == 409


def test_plugin_registers_ui_links(airflow_app: Any) -> None:
    from airflow import plugins_manager

    views, _ = plugins_manager._get_ui_plugins()
    hrefs = {v["destination"]: v["href"] for v in views if v["name"].startswith("LCLStream")}
    assert hrefs == {"nav": "/lclstream/ui", "dag_run": "/lclstream/ui?id={RUN_ID}"}


def test_warm_pools_come_from_the_airflow_variable(client: TestClient) -> None:
    """``/v1/warm-pools`` inside Airflow reads the Variable ``lclstream_warm_pools``."""
    from airflow.models import Variable

    from airflow_provider_lclstream.hooks.warm_pool import (
        WARM_POOLS_VARIABLE,
        load_book,
        save_book,
    )
    from airflow_provider_lclstream.transfer.warm_pool import PoolBook, PoolSpec, PoolState

    before = Variable.get(WARM_POOLS_VARIABLE, default_var=None)
    state = PoolState(spec=PoolSpec(name="api-test", ranks=3, size=2))
    state.count("fallbacks", "fallback: t submitted a fresh job (no standby job)")
    save_book(PoolBook(pools={**load_book().pools, "api-test": state}))
    try:
        assert client.get("/lclstream/v1/warm-pools").status_code == 401
        r = client.get("/lclstream/v1/warm-pools", headers=token("carol", "viewer"))
        assert r.status_code == 200, r.text
        pool = next(p for p in r.json()["data"] if p["name"] == "api-test")
        assert pool["spec"]["ranks"] == 3 and pool["ready"] == 0
        assert pool["counters"]["fallbacks"] == 1 and "fallback: t" in pool["events"][0]
    finally:
        if before is None:
            Variable.delete(WARM_POOLS_VARIABLE)
        else:
            Variable.set(WARM_POOLS_VARIABLE, before)
