"""ElogRunEventTrigger against the real Kafka broker (scripts/services/kafka.sh)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from airflow_provider_lclstream.triggers.elog_run_event import ElogRunEventTrigger

TIMEOUT_S = 60


@pytest.fixture
def topics(kafka_service: str) -> tuple[str, str]:
    """Fresh ``runs`` and ``file_catalog`` topics, so tests never see each other's messages."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"runs-{suffix}", f"file_catalog-{suffix}")
    admin = KafkaAdminClient(bootstrap_servers=kafka_service)
    try:
        admin.create_topics([NewTopic(name, 1, 1) for name in names])
    finally:
        admin.close()
    return names


def produce(bootstrap: str, topic: str, *messages: bytes | dict[str, Any]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for message in messages:
            raw = message if isinstance(message, bytes) else json.dumps(message).encode()
            producer.send(topic, raw).get(timeout=30)
    finally:
        producer.close()


def run_message(crud: str, experiment: str = "mfxl1023", **value: Any) -> dict[str, Any]:
    return {"experiment_name": experiment, "CRUD": crud, "value": value}


def make_trigger(
    bootstrap: str, topics: tuple[str, str], group: str, **kwargs: Any
) -> ElogRunEventTrigger:
    return ElogRunEventTrigger(
        bootstrap_servers=bootstrap,
        group_id=group,
        runs_topic=topics[0],
        files_topic=topics[1],
        auto_offset_reset="earliest",
        poll_timeout=0.5,
        **kwargs,
    )


async def take(trigger: ElogRunEventTrigger, count: int) -> list[dict[str, Any]]:
    """The payloads of the first ``count`` events; then close the trigger as the triggerer does."""
    events = trigger.run()
    try:
        return [(await asyncio.wait_for(anext(events), TIMEOUT_S)).payload for _ in range(count)]
    finally:
        await events.aclose()
        await trigger.cleanup()


async def nothing_within(trigger: ElogRunEventTrigger, seconds: float) -> None:
    events = trigger.run()
    try:
        with pytest.raises(TimeoutError):
            event = await asyncio.wait_for(anext(events), seconds)
            pytest.fail(f"unexpected event {event.payload}")
    finally:
        await events.aclose()
        await trigger.cleanup()


def test_serialize_round_trip() -> None:
    trigger = ElogRunEventTrigger(
        bootstrap_servers=["127.0.0.1:19092"],
        group_id="g",
        experiment_pattern="mfx.*",
        run_types=["DATA"],
        kinds=["run_start"],
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_lclstream.triggers.elog_run_event.ElogRunEventTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert ElogRunEventTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert trigger.topics == ["runs"]


@pytest.mark.kafka
async def test_run_start_fires_and_malformed_is_skipped(
    kafka_service: str, topics: tuple[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    runs, _ = topics
    produce(
        kafka_service,
        runs,
        b"{this is not json",
        run_message("Create", experiment="xppx0001", num=3),  # filtered out
        run_message("Create", num=7, begin_time="2025-05-01T10:00:00Z", type="DATA"),
    )
    trigger = make_trigger(
        kafka_service, topics, f"g-{uuid.uuid4().hex}", experiment_pattern="mfx.*"
    )
    [event] = await take(trigger, 1)
    assert event == {
        "kind": "run_start",
        "experiment": "mfxl1023",
        "run": 7,
        "time": "2025-05-01T10:00:00Z",
        "run_type": "DATA",
        "params": {},
        "topic": runs,
        "partition": 0,
        "offset": 2,
    }
    # Airflow's structlog writes to the process's stdout/stderr, not to the logging module.
    output = capfd.readouterr()
    assert f"Skipping malformed Elog message {runs}[0]@0" in output.out + output.err


@pytest.mark.kafka
async def test_restart_with_same_group_does_not_refire(
    kafka_service: str, topics: tuple[str, str]
) -> None:
    runs, files = topics
    group = f"g-{uuid.uuid4().hex}"
    produce(kafka_service, runs, run_message("Create", num=1, type="DATA"))
    [first] = await take(make_trigger(kafka_service, topics, group), 1)
    assert (first["kind"], first["run"]) == ("run_start", 1)

    # Restarted with the same group: run 1's start is not yielded again; what came since is.
    produce(kafka_service, runs, run_message("Update", num=1, end_time="2025-05-01T11:00:00Z"))
    produce(kafka_service, files, run_message("Create", path="/data/r0001.xtc2", run_num=1))
    events = await take(make_trigger(kafka_service, topics, group), 2)
    assert sorted((e["kind"], e["run"]) for e in events) == [
        ("file_registered", 1),
        ("run_end", 1),
    ]
    [registered] = [e for e in events if e["kind"] == "file_registered"]
    assert registered["path"] == "/data/r0001.xtc2" and registered["time"] is not None

    # Everything was committed: a third start has nothing to report.
    await nothing_within(make_trigger(kafka_service, topics, group), 5)


# ------------------------------------------------------------------ SASL through a connection


@pytest.fixture
def sasl_conn(kafka_service: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A ``lclstream_kafka`` connection to the broker's SASL_PLAINTEXT/PLAIN listener
    (scripts/services/kafka.sh: port PLAINTEXT+2, password kept by the script)."""
    import subprocess

    from tests.conftest import REPO

    password = subprocess.run(
        ["bash", str(REPO / "scripts/services/kafka.sh"), "sasl-password"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    host, _, port = kafka_service.rpartition(":")
    conn = {
        "conn_type": "lclstream_kafka",
        "host": f"{host}:{int(port) + 2}",
        "login": "lclstream",
        "password": password,
        "extra": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_LCLS_KAFKA_SASL", json.dumps(conn))
    wrong = {**conn, "password": f"wrong-{uuid.uuid4().hex}"}
    monkeypatch.setenv("AIRFLOW_CONN_LCLS_KAFKA_WRONG", json.dumps(wrong))
    return {"password": password, "wrong": wrong["password"]}


@pytest.mark.kafka
@pytest.mark.airflow
async def test_run_start_through_a_sasl_connection(
    kafka_service: str,
    topics: tuple[str, str],
    sasl_conn: dict[str, Any],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the connection id is serialized; the SASL login works and a run start fires."""
    import logging

    caplog.set_level(logging.DEBUG)
    trigger = ElogRunEventTrigger(
        kafka_conn_id="lcls_kafka_sasl",
        group_id=f"g-{uuid.uuid4().hex}",
        runs_topic=topics[0],
        files_topic=topics[1],
        auto_offset_reset="earliest",
        poll_timeout=0.5,
    )
    _, kwargs = trigger.serialize()
    assert sasl_conn["password"] not in json.dumps(kwargs)
    produce(kafka_service, topics[0], run_message("Create", num=7, type="DATA"))
    [event] = await take(ElogRunEventTrigger(**kwargs), 1)
    assert (event["kind"], event["run"]) == ("run_start", 7)
    out, err = capfd.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert sasl_conn["password"] not in out + err + logs


@pytest.mark.kafka
@pytest.mark.airflow
async def test_wrong_sasl_password_is_a_clear_error_without_the_secret(
    kafka_service: str,
    topics: tuple[str, str],
    sasl_conn: dict[str, Any],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from airflow_provider_lclstream.triggers.elog_run_event import ElogTriggerError

    caplog.set_level(logging.DEBUG)
    trigger = ElogRunEventTrigger(
        kafka_conn_id="lcls_kafka_wrong",
        group_id=f"g-{uuid.uuid4().hex}",
        runs_topic=topics[0],
        files_topic=topics[1],
        max_reconnects=0,
        consumer_config={"bootstrap_timeout_ms": 5000},
    )
    events = trigger.run()
    with pytest.raises(ElogTriggerError) as info:
        await asyncio.wait_for(anext(events), TIMEOUT_S)
    await trigger.cleanup()
    message = str(info.value)
    assert "did not accept the PLAIN login of user 'lclstream'" in message
    assert "connection 'lcls_kafka_wrong'" in message and "password" in message
    out, err = capfd.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (sasl_conn["wrong"], sasl_conn["password"]):
        assert secret not in message + out + err + logs
