"""Warm streamers end to end (issue #19), ``dag.test()`` with the local backend and real MPI:
``lclstream_warm_pool`` starts a standby ``lclstreamer``, ``lclstream_transfer`` claims it (no
streamer job submitted), every event arrives exactly once, and the pool is topped up; a dead
standby is detected, and the transfer falls back to a fresh job, counted in the pool."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.hooks.warm_pool import load_book
from tests.dags.dag_runner import load_dag, task_states

pytestmark = [pytest.mark.airflow, pytest.mark.mpi, pytest.mark.timeout(600)]  # READY_S and more


@pytest.fixture
def jobs_dir(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "jobs"
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(root))
    return root


@pytest.fixture
def pool_name(jobs_dir: Path, request: pytest.FixtureRequest) -> Any:
    """A pool of its own for each test, emptied (size 0: its jobs cancelled) afterwards."""
    name = f"t-{request.node.name[:40].replace('[', '-').replace(']', '')}-{os.getpid()}"
    yield name
    keep_warm(name, size=0)


def keep_warm(
    pool: str, size: int = 1, wait_ready_s: float = 0, role: str = "streamer"
) -> dict[str, Any]:
    conf = {"pool": pool, "streamer_backend": "local", "ranks": 2, "size": size,
            "idle_timeout_s": 300, "wait_ready_s": wait_ready_s, "role": role}  # fmt: skip
    run = load_dag("lclstream_warm_pool").test(run_conf=conf)
    assert run.state == "success", task_states(run)
    summary = run.get_task_instance("keep_warm").xcom_pull(task_ids="keep_warm")
    assert isinstance(summary, dict)
    return summary


READY_S = 240
"""How long a test waits for its standby to come up: a few seconds on an idle machine, but in
a clean-clone CI run it starts while the test services (Kafka's JVM, SLURM) warm up, and 2
MPI ranks importing psana took longer than 90 s there once."""


def warm_one(pool: str, jobs_dir: Path, role: str = "streamer") -> dict[str, Any]:
    """A pool of one standby job, ready; on a timeout the assertion shows the job's log."""
    summary = keep_warm(pool, wait_ready_s=READY_S, role=role)
    logs = {
        job["job_id"]: (jobs_dir / job["job_id"] / "output.log").read_text()[-3000:]
        if (jobs_dir / job["job_id"] / "output.log").exists()
        else "(no log)"
        for job in summary["jobs"]
    }
    assert len(summary["jobs"]) == 1 and summary["ready"] == 1, (summary, logs)
    return summary


def transfer(tmp_path: Path, events: int) -> tuple[Any, dict[str, Any]]:
    request = {"synthetic": True, "events": events, "img_per_file": 4, "ranks": 2,
               "output_dir": str(tmp_path / "out"), "detector_name": "epix10k2M"}  # fmt: skip
    run = load_dag("lclstream_transfer").test(run_conf={"request": request})
    assert run.state == "success", task_states(run)
    stats = run.get_task_instance("watch_transfer").xcom_pull(task_ids="watch_transfer")
    return run, stats


def test_a_transfer_claims_a_warm_streamer(jobs_dir: Path, tmp_path: Path, pool_name: str) -> None:
    summary = warm_one(pool_name, jobs_dir)
    standby_id = summary["jobs"][0]["job_id"]
    assert "--standby" in (jobs_dir / standby_id / "script").read_text()

    run, stats = transfer(tmp_path, events=10)
    ti = run.get_task_instance("run_streamer")
    events = load_book().pools[pool_name].events
    assert ti.xcom_pull(task_ids="run_streamer", key="job_id") == standby_id, events
    assert ti.xcom_pull(task_ids="run_streamer", key="warm_streamer") is True
    assert stats["ok"] is True and stats["events"] == 20 and stats["lost"] == 0
    # no streamer job was submitted for the transfer: the only lclstreamer jobs are standbys
    scripts = [(job / "script").read_text() for job in jobs_dir.iterdir()]
    streamers = [s for s in scripts if "lclstreamer" in s and "lclstream-buffer" not in s]
    assert streamers and all("--standby" in s for s in streamers)
    log = (jobs_dir / standby_id / "output.log").read_text()
    assert "claimed by" in log and "TOTAL" in log

    pool = load_book().pools[pool_name]
    assert pool.counters["claimed"] == 1 and pool.counters["fallbacks"] == 0
    assert len(pool.jobs) == 1 and pool.jobs[0].job_id != standby_id  # topped up
    assert any("claimed: standby job " + standby_id in e for e in pool.events)


def test_a_dead_warm_streamer_falls_back_to_a_fresh_job(
    jobs_dir: Path, tmp_path: Path, pool_name: str
) -> None:
    summary = warm_one(pool_name, jobs_dir)
    standby_id = summary["jobs"][0]["job_id"]
    info = json.loads((jobs_dir / standby_id / "job.json").read_text())
    os.killpg(int(info["pid"]), signal.SIGKILL)  # the whole job dies at once
    backend = JobBackendHook(None).get_conn()
    deadline = time.monotonic() + 30
    while not backend.state(standby_id).is_final and time.monotonic() < deadline:
        time.sleep(0.2)

    run, stats = transfer(tmp_path, events=6)
    job_id = run.get_task_instance("run_streamer").xcom_pull(task_ids="run_streamer", key="job_id")
    assert job_id != standby_id
    assert "--standby" not in (jobs_dir / job_id / "script").read_text()
    assert stats["ok"] is True and stats["events"] == 12

    pool = load_book().pools[pool_name]
    assert pool.counters["dead"] == 1 and pool.counters["fallbacks"] == 1, pool.counters
    assert any(f"standby job {standby_id}" in e and "dead" in e for e in pool.events), pool.events
    assert any("fallback:" in e for e in pool.events)


def test_a_transfer_claims_a_warm_buffer_and_consumer(
    jobs_dir: Path, tmp_path: Path, pool_name: str
) -> None:
    """Buffer and consumer pools (``role: buffer``, ``role: consumer``): ``start_buffer`` and
    ``start_consumers`` hand standby ``lclstream-buffer`` and ``lclstream-receive`` jobs the
    transfer's arguments instead of submitting jobs; the stream is exact."""
    consumers_pool = pool_name + "-c"
    try:
        buffer_id = warm_one(pool_name, jobs_dir, role="buffer")["jobs"][0]["job_id"]
        summary = warm_one(consumers_pool, jobs_dir, role="consumer")
        consumer_id = summary["jobs"][0]["job_id"]
        assert summary["spec"]["role"] == "consumer"
        assert "lclstream-buffer --standby" in (jobs_dir / buffer_id / "script").read_text()

        run, stats = transfer(tmp_path, events=10)
        ti = run.get_task_instance("start_buffer")
        assert ti.xcom_pull(task_ids="start_buffer", key="job_id") == buffer_id
        assert ti.xcom_pull(task_ids="start_buffer", key="warm_buffer") is True
        ti = run.get_task_instance("start_consumers")
        assert ti.xcom_pull(task_ids="start_consumers", key="job_ids") == [consumer_id]
        assert ti.xcom_pull(task_ids="start_consumers", key="warm_consumers") == 1
        assert stats["ok"] is True and stats["events"] == 20 and stats["lost"] == 0
        # no buffer or consumer job was submitted for the transfer: only standbys
        scripts = [(job / "script").read_text() for job in jobs_dir.iterdir()]
        for program in ("lclstream-buffer", "lclstream-receive"):
            jobs = [s for s in scripts if program in s]
            assert jobs and all("--standby" in s for s in jobs), program
        assert len(list((tmp_path / "out").rglob("c0_*.h5"))) == 2 * 3  # 2 ranks: 4, 4, 2 events
        log = (jobs_dir / buffer_id / "output.log").read_text()
        assert "standby: claimed by" in log and "runs on host" in log
        assert '"eos": true' in (jobs_dir / consumer_id / "output.log").read_text()
        assert run.get_task_instance("stop_jobs").state == "success"
        assert JobBackendHook(None).get_conn().state(buffer_id).is_final  # the teardown

        book = load_book()
        for name, role, claimed in ((pool_name, "buffer", buffer_id),
                                    (consumers_pool, "consumer", consumer_id)):  # fmt: skip
            pool = book.pools[name]
            assert pool.counters["claimed"] == 1 and pool.counters["fallbacks"] == 0, name
            assert len(pool.jobs) == 1 and pool.jobs[0].job_id != claimed  # topped up
            assert pool.jobs[0].role == role
    finally:
        keep_warm(consumers_pool, size=0)


def test_a_prestarted_transfer_streams_before_its_dag_run_and_is_adopted(
    jobs_dir: Path, tmp_path: Path, pool_name: str
) -> None:
    """Prestart (``operators/prestart.py``, what ``lclstream_on_run_start`` does before it
    triggers the transfer): the run start claims a warm buffer, streamer and consumer under
    the job names of the transfer's tasks, and the stream reaches the consumer before the
    transfer's DAG run exists. The DAG run then adopts those three jobs (same XComs as any
    transfer, nothing submitted or claimed again), watches the exact stream and stops the
    buffer."""
    from datetime import datetime

    from airflow_provider_lclstream.operators.prestart import prestart_transfer

    pools = {"streamer": pool_name, "buffer": pool_name + "-b", "consumer": pool_name + "-c"}
    try:
        standby = {
            role: warm_one(name, jobs_dir, role=role)["jobs"][0]["job_id"]
            for role, name in pools.items()
        }
        request = {"synthetic": True, "events": 10, "img_per_file": 4, "ranks": 2,
                   "output_dir": str(tmp_path / "out"), "detector_name": "epix10k2M"}  # fmt: skip
        when = datetime.now(UTC)
        run_id = f"manual__{when.isoformat()}"  # what dag.test() names a run at ``when``
        conf = prestart_transfer({"request": request}, run_id)
        assert conf is not None
        assert conf["prestart"] == {
            "buffer": standby["buffer"],
            "streamer": standby["streamer"],
            "consumers": [standby["consumer"]],
        }
        assert conf["request"]["buffer_ports"]  # chosen once, for the buffer and the DAG run
        # the stream arrives with no DAG run: 2 ranks of 10 events, 4 per file: 6 files
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "out").rglob("c0_*.h5"))) < 6:
            assert time.monotonic() < deadline, jobs_dir / standby["consumer"] / "output.log"
            time.sleep(0.2)

        run = load_dag("lclstream_transfer").test(run_after=when, logical_date=when, run_conf=conf)
        assert run.run_id == run_id and run.state == "success", task_states(run)

        def xcom(task: str, key: str) -> Any:
            return run.get_task_instance(task).xcom_pull(task_ids=task, key=key)

        assert xcom("start_buffer", "job_id") == standby["buffer"]
        assert xcom("start_buffer", "warm_buffer") is True
        assert xcom("start_consumers", "job_ids") == [standby["consumer"]]
        assert xcom("start_consumers", "warm_consumers") == 1
        assert xcom("run_streamer", "job_id") == standby["streamer"]
        assert xcom("run_streamer", "warm_streamer") is True
        stats = xcom("watch_transfer", "return_value")
        assert stats["ok"] is True and stats["events"] == 20 and stats["lost"] == 0
        assert len(list((tmp_path / "out").rglob("c0_*.h5"))) == 6
        scripts = [(job / "script").read_text() for job in jobs_dir.iterdir()]
        for program in ("lclstreamer", "lclstream-buffer", "lclstream-receive"):
            jobs = [s for s in scripts if f"{program} " in s]
            assert jobs and all("--standby" in s for s in jobs), program
        assert run.get_task_instance("stop_jobs").state == "success"
        assert JobBackendHook(None).get_conn().state(standby["buffer"]).is_final  # the teardown

        book = load_book()
        for role, name in pools.items():
            pool = book.pools[name]
            assert pool.counters["claimed"] == 1 and pool.counters["fallbacks"] == 0, name
            assert len(pool.jobs) == 1 and pool.jobs[0].job_id != standby[role]  # topped up
    finally:
        for name in list(pools.values())[1:]:
            keep_warm(name, size=0)
