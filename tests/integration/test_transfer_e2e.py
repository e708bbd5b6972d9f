"""The main scenario on real services: an Elog run-start message on Kafka makes a running
Airflow (scheduler, triggerer, dag-processor, api-server) start ``lclstream_on_run_start``,
which starts ``lclstream_transfer``: buffer, consumer and a 2-rank MPI streamer reading a psana2
xtc2 file, all as jobs on the single-node SLURM (slurmrestd). Also: cancelling a transfer, and
``lclstream-arp-launch`` driving ``lclstream_transfer`` through the REST API v2."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from tests.airflow_api import AirflowApi
from tests.conftest import REPO

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.slurm,
    pytest.mark.kafka,
    pytest.mark.psana,
    pytest.mark.mpi,
]
GROUP = "lclstream-on-run-start"
XTC2_EVENTS = 10


@pytest.fixture(scope="module")
def api(airflow_standalone: dict[str, Any]) -> AirflowApi:
    return AirflowApi(
        airflow_standalone["url"], airflow_standalone["user"], airflow_standalone["password"]
    )


def ensure_topics(bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    for topic in ("runs", "file_catalog"):
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()


def wait_for_group_member(bootstrap: str, group: str, timeout: float = 120) -> None:
    """The AssetWatcher's consumer joined its group (it starts at 'latest': a message sent
    before that would be missed by design). Retriable errors (a fresh broker's group
    coordinator still loading: ``CoordinatorNotAvailable``) are waited out."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                described = admin.describe_groups([group]).get(group, {})
            except KafkaError as err:  # a fresh broker's coordinator may not be up yet
                if not err.retriable:
                    raise
                time.sleep(1)
                continue
            state = described.get("group_state") or described.get("state")
            if state == "Stable" and described.get("members"):
                return
            time.sleep(1)
    finally:
        admin.close()
    raise AssertionError(f"the run-start watcher did not join consumer group {group}")


def produce_run_start(
    bootstrap: str, experiment: str, run: int, producer: KafkaProducer | None = None
) -> None:
    """Publish an Elog run start (with ``producer``, a connected one, if given)."""
    own = producer is None
    producer = producer or KafkaProducer(bootstrap_servers=bootstrap)
    message = {
        "experiment_name": experiment,
        "CRUD": "Create",
        "value": {"num": run, "begin_time": "2026-11-24T04:00:00Z", "type": "DATA", "params": {}},
    }
    producer.send("runs", json.dumps(message).encode()).get(timeout=30)
    if own:
        producer.close()


def h5_events(directory: Path) -> tuple[int, int]:
    files = sorted(directory.rglob("*.h5"))
    return len(files), sum(h5py.File(f)["/data/data"].shape[0] for f in files)


def squeue_names() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, timeout=30)
    return out.stdout.split()


def our_processes() -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True)
    names = ("bin/lclstreamer ", "bin/lclstream-buffer ", "bin/lclstream-receive ")
    return [line for line in out.stdout.splitlines() if any(n in line for n in names)]


def test_run_start_on_kafka_streams_the_run_through_slurm(
    api: AirflowApi, airflow_standalone: dict[str, Any]
) -> None:
    bootstrap = airflow_standalone["kafka"]
    ensure_topics(bootstrap)
    api.unpause("lclstream_transfer")
    api.unpause("lclstream_on_run_start")
    wait_for_group_member(bootstrap, GROUP)
    known = {r["dag_run_id"] for r in api.runs("lclstream_transfer")}
    sent = time.monotonic()
    produce_run_start(bootstrap, "xpptut15", 14)
    run_id = api.wait_for_new_run("lclstream_transfer", known, timeout=120)
    state = api.wait_for_run("lclstream_transfer", run_id, timeout=300)
    tasks = api.tasks("lclstream_transfer", run_id)
    assert state == "success", tasks
    stats = api.xcom("lclstream_transfer", run_id, "watch_transfer")
    assert stats["events"] == XTC2_EVENTS and stats["producers_ended"] == 2 and stats["lost"] == 0
    out = airflow_standalone["output"] / "xpptut15-r0014"
    files, events = h5_events(out)
    assert events == XTC2_EVENTS and files == stats["messages"]
    print(f"run start -> transfer success in {time.monotonic() - sent:.1f} s")


def test_marking_the_run_failed_cancels_jobs_and_stops_the_buffer(api: AirflowApi) -> None:
    api.unpause("lclstream_transfer")
    request = {
        "synthetic": True,
        "events": 100000,
        "img_per_file": 1,
        "ranks": 2,
        "streamer": {"backend": "slurm"},
        "buffer": {"backend": "slurm"},
        "consumer": {"backend": "slurm"},
    }
    run_id = api.trigger("lclstream_transfer", {"request": request})
    deadline = time.monotonic() + 120
    while api.tasks("lclstream_transfer", run_id).get("run_streamer") != "deferred":
        assert time.monotonic() < deadline, api.tasks("lclstream_transfer", run_id)
        time.sleep(1)
    time.sleep(2)  # data is flowing
    assert len([n for n in squeue_names() if "-" in n]) >= 3, squeue_names()
    buffer = api.xcom("lclstream_transfer", run_id, "start_buffer")
    cancelled_at = time.monotonic()
    api.mark_failed("lclstream_transfer", run_id)
    while squeue_names() or our_processes():
        assert time.monotonic() - cancelled_at < 15, (squeue_names(), our_processes())
        time.sleep(0.5)
    import httpx

    with pytest.raises(httpx.TransportError):
        httpx.get(buffer["metrics_url"] + "/stats", timeout=2)
    print(f"cancelled everything in {time.monotonic() - cancelled_at:.1f} s")


def test_arp_launch_drives_lclstream_transfer(
    api: AirflowApi, airflow_standalone: dict[str, Any]
) -> None:
    api.unpause("lclstream_transfer")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ARP_", "LCLSTREAM_AIRFLOW"))},
        "EXPERIMENT": "xpptut15",
        "RUN_NUM": "14",
        "ARP_JOB_ID": "e2e-1",
        "LCLSTREAM_AIRFLOW_URL": airflow_standalone["url"],
        "LCLSTREAM_AIRFLOW_USER": airflow_standalone["user"],
        "LCLSTREAM_AIRFLOW_PASSWORD": airflow_standalone["password"],
    }
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_lclstream.arp.launch", "--dag-id",
         "lclstream_transfer", "--poll-interval", "1", "--timeout", "300",
         "--conf", '{"detector_name": "xppcspad", "img_per_file": 3}'],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "watch_transfer" in result.stdout and "success" in result.stdout
    assert "transfer: 10 events" in result.stdout  # the numbers also go to the Elog counters
