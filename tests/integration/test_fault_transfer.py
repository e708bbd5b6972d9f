"""Fault scenarios of a transfer on the real services: a component of the running Airflow
(triggerer, scheduler) restarted while ``lclstream_transfer`` streams through SLURM.

The transfer is small and paced (2 ranks x ``EVENTS`` synthetic events at ``RATE`` events per
second and rank, ``InternalEventSource.events_per_second``), so data is still flowing when the
restart lands on any machine. Each test waits for real signals before the fault (the streamer
job running, its wait deferred to the triggerer, messages through the buffer) and after it
(``airflow-standalone.sh restart-component`` returns once a heartbeat of the new process is
seen), then checks exact accounting: every event produced is delivered (buffer report and the
consumer's HDF5 files), each task ran once, and each job of the run was submitted once.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import httpx
import pytest

from airflow_provider_lclstream.config.loader import dump_flat
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.transfer.stats import progress
from tests.airflow_api import AirflowApi
from tests.conftest import SERVICES_DIR
from tests.standalone import restart_component

pytestmark = [pytest.mark.airflow, pytest.mark.slurm, pytest.mark.mpi]
DAG = "lclstream_transfer"
RANKS = 2
EVENTS = 24  # per rank
RATE = 1.0  # events per second and rank: about 24 s of streaming
#: the tasks that submit one job each (job-name suffix of consumer 0: "-0")
JOB_TASKS = {"start_buffer": "start_buffer", "start_consumers": "start_consumers-0",
             "run_streamer": "run_streamer"}  # fmt: skip


@pytest.fixture
def standalone(airflow_standalone: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The running Airflow; left healthy (restarted whole if a fault test broke it)."""
    try:
        yield airflow_standalone
    finally:
        script = str(SERVICES_DIR / "airflow-standalone.sh")
        env = airflow_standalone["env"]
        status = subprocess.run(["bash", script, "status"], env=env, timeout=60)
        if status.returncode != 0:
            subprocess.run(["bash", script, "start"], env=env, timeout=300, check=True)


@pytest.fixture
def api(standalone: dict[str, Any]) -> AirflowApi:
    return AirflowApi(standalone["url"], standalone["user"], standalone["password"])


def paced_request(output_dir: Path) -> dict[str, Any]:
    """A synthetic transfer on SLURM whose streamer makes ``RATE`` small frames a second."""
    request = TransferRequest(synthetic=True, events=EVENTS, img_per_file=2, ranks=RANKS)
    config = dump_flat(request.to_streamer_config("tcp://127.0.0.1:1"))
    config["event_source"]["events_per_second"] = RATE
    config["data_sources"]["detector_data"] = {"type": "SyntheticDetector", "shape": [1, 64, 64]}
    return {
        "config": config,
        "ranks": RANKS,
        "output_dir": str(output_dir),
        "streamer": {"backend": "slurm"},
        "buffer": {"backend": "slurm"},
        "consumer": {"backend": "slurm"},
    }


def slurm_jobs(env: dict[str, str]) -> list[tuple[str, str, str]]:
    """(id, name, state) of every job slurmctld knows, finished ones included (MinJobAge)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i|%j|%T"],
        capture_output=True, text=True, timeout=30, env=env, check=True,
    ).stdout  # fmt: skip
    return [tuple(line.split("|", 2)) for line in out.splitlines() if line]  # type: ignore[misc]


def jobs_of_run(env: dict[str, str], run_id: str) -> dict[str, list[tuple[str, str, str]]]:
    """This run's jobs per submitting task, by the digest ``job_name_for`` puts in the name."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    jobs = slurm_jobs(env)
    for task_id, name_part in JOB_TASKS.items():
        digest = hashlib.sha256(f"{DAG}\0{run_id}\0{name_part}\0-1".encode()).hexdigest()[:12]
        found[task_id] = [job for job in jobs if job[1].endswith(f"-{digest}")]
    return found


def try_numbers(api: AirflowApi, run_id: str) -> dict[str, int]:
    data = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")
    return {ti["task_id"]: ti["try_number"] for ti in data["task_instances"]}


def h5_events(directory: Path) -> int:
    return sum(h5py.File(f)["/data/data"].shape[0] for f in sorted(directory.rglob("*.h5")))


def wait_streaming(api: AirflowApi, run_id: str, env: dict[str, str], timeout: float) -> str:
    """Wait until the streamer job runs, its wait is deferred to the triggerer and messages
    went through the buffer; returns the buffer's metrics URL."""
    deadline = time.monotonic() + timeout
    metrics_url = ""
    while True:
        tasks = api.tasks(DAG, run_id)
        assert "failed" not in tasks.values() and "upstream_failed" not in tasks.values(), tasks
        assert time.monotonic() < deadline, f"not streaming after {timeout} s: {tasks}"
        if tasks.get("run_streamer") == "deferred":
            metrics_url = metrics_url or str(api.xcom(DAG, run_id, "start_buffer")["metrics_url"])
            streamer = jobs_of_run(env, run_id)["run_streamer"]
            try:
                moved = progress(httpx.get(metrics_url + "/stats", timeout=5).json())
            except httpx.HTTPError:
                moved = (0, 0)
            if streamer and streamer[0][2] == "RUNNING" and moved[1] > 0:
                return metrics_url
        time.sleep(0.5)


@pytest.mark.parametrize("component", ["triggerer", "scheduler"])
def test_restart_mid_transfer_completes_with_every_event(
    component: str, api: AirflowApi, standalone: dict[str, Any]
) -> None:
    env = {**standalone["env"], **standalone["slurm"]}
    api.unpause(DAG)
    output = standalone["output"] / f"fault-{component}"
    run_id = api.trigger(DAG, {"request": paced_request(output)})
    metrics_url = wait_streaming(api, run_id, env, timeout=120)
    before = progress(httpx.get(metrics_url + "/stats", timeout=5).json())
    took = restart_component(standalone, component)
    streamer = jobs_of_run(env, run_id)["run_streamer"]
    print(
        f"{component} restarted in {took:.1f} s with {before[1]} of {RANKS * EVENTS // 2} "
        f"messages delivered; streamer job then {streamer[0][2] if streamer else '?'}"
    )
    state = api.wait_for_run(DAG, run_id, timeout=180)
    assert state == "success", api.tasks(DAG, run_id)
    stats = api.xcom(DAG, run_id, "watch_transfer")
    assert stats["events"] == RANKS * EVENTS, stats
    assert (stats["lost"], stats["skipped"], stats["producers_ended"]) == (0, 0, RANKS), stats
    assert h5_events(output) == RANKS * EVENTS
    tries = try_numbers(api, run_id)
    assert all(n == 1 for n in tries.values()), tries  # no task ran twice
    jobs = jobs_of_run(env, run_id)
    assert all(len(found) == 1 for found in jobs.values()), jobs  # no job submitted twice
    print(f"{component}: {stats['events']} events produced, delivered; jobs {jobs}")
