"""Fault scenario on the real services: the Kafka broker restarted while
``lclstream_on_run_start`` waits for run starts (its ``AssetWatcher`` runs
``ElogRunEventTrigger`` in the triggerer, through the broker's SASL listener).

A run start before the restart and one sent as soon as the broker answers again must each make
exactly one ``lclstream_transfer`` run (told apart by the Kafka offset the run-start event
carries into the transfer's conf), and each transfer must deliver every event of the run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaProducer

from tests.airflow_api import AirflowApi
from tests.conftest import ensure_service, run_service_script
from tests.integration.test_transfer_e2e import ensure_topics, wait_for_group_member

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.slurm,
    pytest.mark.kafka,
    pytest.mark.psana,
    pytest.mark.mpi,
]
GROUP = "lclstream-on-run-start"
XTC2_EVENTS = 10  # the xtcwriter file behind run 14 of xpptut15 (tests/conftest.py)


@pytest.fixture
def standalone(airflow_standalone: dict[str, Any]) -> Iterator[dict[str, Any]]:
    try:
        yield airflow_standalone
    finally:  # the broker is left up for the tests after this one, whatever happened
        ensure_service("kafka")


def run_start(bootstrap: str, run: int) -> int:
    """Publish an Elog run start of xpptut15; return its offset on the ``runs`` topic."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    message = {
        "experiment_name": "xpptut15",
        "CRUD": "Create",
        "value": {"num": run, "begin_time": "2026-11-24T04:00:00Z", "type": "DATA", "params": {}},
    }
    try:
        return int(producer.send("runs", json.dumps(message).encode()).get(timeout=60).offset)
    finally:
        producer.close()


def transfers_by_offset(api: AirflowApi, known: set[str]) -> Counter[int]:
    """How many new ``lclstream_transfer`` runs each run-start offset made."""
    counts: Counter[int] = Counter()
    for run in api.get("/dags/lclstream_transfer/dagRuns", limit=100)["dag_runs"]:
        if run["dag_run_id"] not in known:
            counts[int(((run.get("conf") or {}).get("event") or {}).get("offset", -1))] += 1
    return counts


def run_of_offset(api: AirflowApi, offset: int, known: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in api.get("/dags/lclstream_transfer/dagRuns", limit=100)["dag_runs"]:
            event = (run.get("conf") or {}).get("event") or {}
            if run["dag_run_id"] not in known and event.get("offset") == offset:
                return str(run["dag_run_id"])
        time.sleep(0.5)
    raise AssertionError(f"no lclstream_transfer run for the run start at offset {offset}")


def wait_run_starts_done(api: AirflowApi, known: set[str], timeout: float) -> None:
    """Every new lclstream_on_run_start run finished (none still triggering transfers)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = api.runs("lclstream_on_run_start")
        states = [r["state"] for r in runs if r["dag_run_id"] not in known]
        if all(s in ("success", "failed") for s in states):
            assert "failed" not in states, states
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.5)


def check_transfer(api: AirflowApi, run_id: str) -> dict[str, Any]:
    state = api.wait_for_run("lclstream_transfer", run_id, timeout=240)
    assert state == "success", api.tasks("lclstream_transfer", run_id)
    stats = api.xcom("lclstream_transfer", run_id, "watch_transfer")
    assert stats["events"] == XTC2_EVENTS, stats
    assert (stats["lost"], stats["skipped"], stats["producers_ended"]) == (0, 0, 2), stats
    return dict(stats)


def test_kafka_restart_while_run_start_waits(standalone: dict[str, Any]) -> None:
    api = AirflowApi(standalone["url"], standalone["user"], standalone["password"])
    bootstrap = standalone["kafka"]
    ensure_topics(bootstrap)
    api.unpause("lclstream_transfer")
    api.unpause("lclstream_on_run_start")
    wait_for_group_member(bootstrap, GROUP)
    known = {r["dag_run_id"] for r in api.get("/dags/lclstream_transfer/dagRuns", limit=100)[
        "dag_runs"]}  # fmt: skip
    known_starts = {r["dag_run_id"] for r in api.runs("lclstream_on_run_start")}
    before = run_start(bootstrap, 14)
    first = run_of_offset(api, before, known, timeout=120)
    check_transfer(api, first)  # done before the next one writes the same run's files
    started = time.monotonic()
    restarted = run_service_script("kafka", "restart", timeout=300)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    took = time.monotonic() - started
    after = run_start(bootstrap, 14)  # at once: the watcher may not have reconnected yet
    sent = time.monotonic()
    second = run_of_offset(api, after, known, timeout=180)
    print(f"kafka restarted in {took:.1f} s; run start after it -> transfer in "
          f"{time.monotonic() - sent:.1f} s")  # fmt: skip
    stats = check_transfer(api, second)
    wait_run_starts_done(api, known_starts, timeout=120)
    counts = transfers_by_offset(api, known)
    assert counts == Counter({before: 1, after: 1}), counts
    print(f"run starts at offsets {before}, {after}: transfers {dict(counts)}; {stats}")
