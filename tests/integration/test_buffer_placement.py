"""The buffer tells where it is: ``lclstream_transfer`` (``dag.test()``) with the buffer as a job
on the single-node SLURM, its address learned from SLURM (through slurmrestd, and through
``sbatch``/``scontrol`` with ``buffer_host`` pinning it: ``--nodelist``); a pin to a node that
does not exist; and a buffer that lands where nobody can reach it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import h5py
import pytest

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.backends.local import LocalBackend
from tests.conftest import STATE_DIR
from tests.dags.dag_runner import load_dag, task_states
from tests.standalone import slurm_environment

pytestmark = [pytest.mark.airflow, pytest.mark.slurm, pytest.mark.mpi]
SLURM_CONN = "lcls_slurm_buffer"
SLURM_CLI_CONN = "lcls_slurm_cli_buffer"
#: TEST-NET-2 (RFC 5737): routed nowhere, so a connection there never completes
UNREACHABLE = "198.51.100.7"


class FarAwayBackend(LocalBackend):
    """Local jobs whose node the backend reports at an address nobody reaches (a buffer that
    landed on a node outside the consumers' network)."""

    name = "faraway"

    def node_address(self, node: str) -> str:
        return UNREACHABLE


@pytest.fixture
def jobs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "jobs"
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(root))
    return root


@pytest.fixture
def slurm_conn(slurm_service: None, airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    env = slurm_environment(STATE_DIR)
    monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
    monkeypatch.delenv("SLURM_JWT", raising=False)
    conn = {
        "conn_type": "lclstream_slurm",
        "host": env["LCLSTREAM_SLURMRESTD_URL"],
        "extra": {"job_defaults": {"partition": "debug"}},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{SLURM_CONN.upper()}", json.dumps(conn))
    cli = {"conn_type": "lclstream_slurm_cli", "extra": {"job_defaults": {"partition": "debug"}}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{SLURM_CLI_CONN.upper()}", json.dumps(cli))
    return SLURM_CONN


def request(out: Path, **extra: Any) -> dict[str, Any]:
    return {
        "synthetic": True,
        "events": 12,
        "img_per_file": 5,
        "ranks": 2,
        "consumers": 2,
        "output_dir": str(out),
        "detector_name": "epix10k2M",
        **extra,
    }


def slurm_node_of(job_id: str) -> str:
    shown = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30
    ).stdout
    return next(w for w in shown.split() if w.startswith("NodeList=")).removeprefix("NodeList=")


@pytest.mark.parametrize(
    ("backend", "conn_id", "pin"),
    [("slurm", SLURM_CONN, None), ("slurm_cli", SLURM_CLI_CONN, "localhost")],
    ids=["slurmrestd-unpinned", "sbatch-pinned"],
)
def test_a_slurm_buffer_is_reached_at_the_address_of_its_node(
    slurm_conn: str, jobs_dir: Path, tmp_path: Path, backend: str, conn_id: str, pin: str | None
) -> None:
    """The URLs' host is the ``NodeAddr`` of the node SLURM put the buffer on (``localhost`` ->
    127.0.0.1); ``buffer_host`` becomes ``--nodelist``; every event arrives exactly once."""
    out = tmp_path / "out"
    buffer = {"backend": backend, "conn_id": conn_id}
    pinned = {"buffer_host": pin} if pin else {}
    run = load_dag("lclstream_transfer").test(
        run_conf={"request": request(out, buffer=buffer, **pinned)}
    )
    states = task_states(run)
    assert run.state == "success", states
    ti = run.get_task_instance("start_buffer")
    job_id = ti.xcom_pull(task_ids="start_buffer", key="job_id")
    assert slurm_node_of(str(job_id)) == "localhost"
    assert ti.xcom_pull(task_ids="start_buffer", key="buffer_address") == "127.0.0.1"
    assert ti.xcom_pull(task_ids="start_buffer", key="input_url").startswith("tcp://127.0.0.1:")
    stats = ti.xcom_pull(task_ids="watch_transfer")
    assert stats["events"] == 24 and stats["producers_ended"] == 2 and stats["lost"] == 0
    files = sorted(out.rglob("*.h5"))
    assert len(files) == stats["messages"] == 6
    assert sum(h5py.File(f)["/data/data"].shape[0] for f in files) == 24


def test_a_pin_to_a_node_that_does_not_exist_fails_the_submission_naming_it(
    slurm_conn: str, jobs_dir: Path, tmp_path: Path
) -> None:
    buffer = {"backend": "slurm_cli", "conn_id": SLURM_CLI_CONN}
    errors: list[str] = []
    dag = load_dag("lclstream_transfer")
    dag.get_task("start_buffer").on_failure_callback = [
        lambda c: errors.append(str(c.get("exception")))
    ]
    run = dag.test(
        run_conf={"request": request(tmp_path, buffer=buffer, buffer_host="nosuchnode7")}
    )
    states = task_states(run)
    assert run.state == "failed" and states["start_buffer"] == "failed", states
    assert states["start_consumers"] == "upstream_failed"
    assert errors and "pinned to node 'nosuchnode7' could not be submitted" in errors[0], errors


def test_a_buffer_nobody_reaches_fails_start_consumers_naming_the_address(
    airflow_db: Path, jobs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The buffer job runs (a local job), but its backend reports a node at an unreachable
    address: ``start_consumers`` fails once the readiness timeout passed, naming it."""
    from airflow_provider_lclstream.config.backends import BACKENDS, register_backend

    register_backend("faraway", FarAwayBackend, conn_type="lclstream_faraway")
    monkeypatch.setenv(
        "AIRFLOW_CONN_LCLSTREAM_FARAWAY",
        json.dumps({"conn_type": "lclstream_faraway", "extra": {"root": str(jobs_dir)}}),
    )
    errors: list[str] = []
    try:
        from airflow.sdk import DAG

        from airflow_provider_lclstream.task_groups.transfer import transfer_task_group
        from tests.dags.dag_runner import register

        with DAG("buffer_far_away", schedule=None) as dag:
            group = transfer_task_group(
                request(tmp_path, buffer={"backend": "faraway"}, consumers=1),
                buffer_ready_timeout=4.0,
                deferrable=False,
            )
        group.start_consumers.on_failure_callback = [
            lambda c: errors.append(str(c.get("exception")))
        ]
        register(dag)
        started = time.monotonic()
        run = dag.test()
        elapsed = time.monotonic() - started
    finally:
        BACKENDS.pop("faraway", None)
    states = task_states(run)
    assert states["start_buffer"] == "success", states
    assert states["start_consumers"] == "failed", states
    assert errors and f"did not answer on http://{UNREACHABLE}:" in errors[0], errors
    assert elapsed < 90, elapsed
    assert all((job / "result.json").exists() for job in jobs_dir.iterdir()), (
        "the teardown left a job running"
    )


class SecondSubmitFails(LocalBackend):
    """Local jobs, but the second submission of this backend object fails (a cluster that
    refused the second of a transfer's buffers)."""

    name = "second_fails"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submissions = 0

    def submit(self, spec: Any) -> str:
        self.submissions += 1
        if self.submissions == 2:
            from airflow_provider_lclstream.exceptions import JobBackendError

            raise JobBackendError("refused: QOSMaxSubmitJobPerUserLimit")
        return super().submit(spec)


def test_a_failed_start_buffer_cancels_the_buffers_it_submitted(
    airflow_db: Path, jobs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``buffers: 2`` and the second submission fails: the group's teardown does not run when
    its setup (``start_buffer``) failed, so ``start_buffer`` cancels buffer 0 itself."""
    from airflow_provider_lclstream.config.backends import BACKENDS, register_backend

    register_backend("second_fails", SecondSubmitFails, conn_type="lclstream_second_fails")
    monkeypatch.setenv(
        "AIRFLOW_CONN_LCLSTREAM_SECOND_FAILS",
        json.dumps({"conn_type": "lclstream_second_fails", "extra": {"root": str(jobs_dir)}}),
    )
    errors: list[str] = []
    try:
        dag = load_dag("lclstream_transfer")
        dag.get_task("start_buffer").on_failure_callback = [
            lambda c: errors.append(str(c.get("exception")))
        ]
        run = dag.test(
            run_conf={
                "request": request(
                    tmp_path, buffers=2, buffer={"backend": "second_fails"}, consumers=2
                )
            }
        )
    finally:
        BACKENDS.pop("second_fails", None)
    states = task_states(run)
    assert run.state == "failed" and states["start_buffer"] == "failed", states
    assert errors and "QOSMaxSubmitJobPerUserLimit" in errors[0], errors
    jobs = [job for job in jobs_dir.iterdir() if job.is_dir()]
    assert len(jobs) == 1, jobs  # buffer 0 only
    status = LocalBackend(jobs_dir).state(jobs[0].name)
    assert status.state is JobState.CANCELLED, status
