"""lclstream_transfer end to end in real Airflow 3.3 (``dag.test()``) with the local backend:
a persistent buffer, a consumer writing HDF5 files, a 2-rank MPI streamer, the transfer
sensor, and the teardown that stops the buffer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import h5py
import pytest

from tests.dags.dag_runner import load_dag, task_states

pytestmark = [pytest.mark.airflow, pytest.mark.mpi]


@pytest.fixture
def jobs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "jobs"
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(root))
    return root


def job_states(jobs_dir: Path) -> dict[str, Any]:
    out = {}
    for job in jobs_dir.iterdir():
        result = job / "result.json"
        out[job.name] = json.loads(result.read_text()) if result.exists() else None
    return out


def test_synthetic_transfer_succeeds_and_counts_match(
    airflow_db: Path, jobs_dir: Path, tmp_path: Path
) -> None:
    dag = load_dag("lclstream_transfer")
    out = tmp_path / "out"
    request = {
        "synthetic": True,
        "events": 12,
        "img_per_file": 5,
        "ranks": 2,
        "consumers": 1,
        "output_dir": str(out),
        "detector_name": "epix10k2M",
    }
    started = time.monotonic()
    run = dag.test(run_conf={"request": request})
    elapsed = time.monotonic() - started
    states = task_states(run)
    assert run.state == "success", states
    assert set(states.values()) == {"success"}, states
    stats = run.get_task_instance("watch_transfer").xcom_pull(task_ids="watch_transfer")
    assert stats["events"] == 24 and stats["producers_ended"] == 2
    assert stats["lost"] == 0 and stats["ok"] is True
    files = sorted(out.rglob("*.h5"))
    assert len(files) == stats["messages"] == 6  # 3 messages (5, 5, 2 events) per rank
    assert sum(h5py.File(f)["/data/data"].shape[0] for f in files) == 24
    # The extra links (worked out by the worker, stored in XCom): "Transfer" opens the transfers
    # page of this run, "Job" the streamer task's log.
    ti = run.get_task_instance("start_buffer")
    page = ti.xcom_pull(task_ids="start_buffer", key="_link_TransferLink")
    assert page.endswith("/lclstream/ui?id=" + quote(run.run_id, safe="")), page
    job = ti.xcom_pull(task_ids="run_streamer", key="_link_JobLink")
    assert job.endswith(f"/dags/lclstream_transfer/runs/{quote(run.run_id, safe='')}"
                        "/tasks/run_streamer?try_number=1"), job  # fmt: skip
    # The teardown stopped the persistent buffer: no job is left running.
    assert all(result is not None for result in job_states(jobs_dir).values()), job_states(jobs_dir)
    print(f"transfer dag.test() took {elapsed:.1f} s")


def test_bad_request_fails_naming_the_field(airflow_db: Path, jobs_dir: Path) -> None:
    dag = load_dag("lclstream_transfer")
    run = dag.test(run_conf={"request": {"exp": "xpp;rm -rf /", "run": 1}})
    states = task_states(run)
    assert run.state == "failed"
    assert states["build_request"] == "failed"
    assert states["start_buffer"] == "upstream_failed"
    assert not jobs_dir.exists() or not any(jobs_dir.iterdir())  # nothing was submitted


def test_addr_sends_to_the_users_receiver_and_starts_no_consumer(
    airflow_db: Path, jobs_dir: Path, tmp_path: Path
) -> None:
    """``addr``: the buffer dials the user's own ``lclstream-receive --bind``; no consumer job."""
    import subprocess
    import sys

    from tests.integration.streaming import free_port

    addr = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "mine"
    receiver = subprocess.Popen(
        [str(Path(sys.executable).parent / "lclstream-receive"), "--url", addr, "--bind",
         "--out", str(out), "--timeout", "180", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        request = {"synthetic": True, "events": 12, "img_per_file": 5, "ranks": 2, "addr": addr}
        run = load_dag("lclstream_transfer").test(run_conf={"request": {**request}})
        states = task_states(run)
        assert run.state == "success", states
        received, errors = receiver.communicate(timeout=120)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert receiver.returncode == 0, errors[-2000:]
    ti = run.get_task_instance("start_consumers")
    assert ti.xcom_pull(task_ids="start_consumers", key="job_ids") == []
    names = list(job_states(jobs_dir))
    assert len(names) == 2 and not [n for n in names if "consumer" in n], names  # buffer, streamer
    files = sorted(out.glob("*.h5"))
    assert len(files) == 6 and sum(h5py.File(f)["/data/data"].shape[0] for f in files) == 24
    assert json.loads(received.strip().splitlines()[-1])["ok"] is True
