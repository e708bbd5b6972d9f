"""SubmitJobOperator (deferrable) over a ``lclstream_slurm`` connection, run with ``dag.test()``.

The connection is defined through ``AIRFLOW_CONN_LCLS_SLURM``; ``dag.test()`` runs the
JobStateTrigger inline, so each test goes submit -> defer -> trigger -> execute_complete.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STATE_DIR
from tests.dags.dag_runner import register
from tests.standalone import slurm_environment

pytestmark = [pytest.mark.slurm, pytest.mark.airflow]

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
CONN_ID = "lcls_slurm"


@pytest.fixture
def slurm_conn(slurm_service: None, airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    env = slurm_environment(STATE_DIR)
    monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])  # scontrol token mints the JWT
    monkeypatch.delenv("SLURM_JWT", raising=False)
    conn = {
        "conn_type": "lclstream_slurm",
        "host": env["LCLSTREAM_SLURMRESTD_URL"],
        "extra": {"job_defaults": {"partition": "debug"}},  # api_version: probed
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    return CONN_ID


def make_dag(
    tmp_path: Path, script: str, errors: list[str] | None = None, operator: Any = None, **kw: Any
) -> Any:
    from airflow.sdk import DAG

    from airflow_provider_lclstream.operators.submit_job import SubmitJobOperator

    def on_failure(context: Any) -> None:
        if errors is not None:
            errors.append(str(context.get("exception")))

    with DAG(f"test_slurm_op_{uuid.uuid4().hex[:8]}", schedule=None, start_date=START) as dag:
        (operator or SubmitJobOperator)(
            task_id="job",
            conn_id=CONN_ID,
            deferrable=True,
            job={
                "name": "lcls",
                "script": script,
                "directory": str(tmp_path),
                "resources": {"duration": 5, "process_count": 2},
            },
            poll_interval=0.3,
            max_poll_interval=1.0,
            on_failure_callback=on_failure,
            **kw,
        )
    register(dag)
    return dag


def outputs(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("slurm-lcls-*.out"))


def test_mpi_job_succeeds(slurm_conn: str, mpiexec: str, tmp_path: Path) -> None:
    # One write per rank: two ranks' print() calls can interleave ("01\n\n" was seen).
    code = 'import os; from mpi4py import MPI; os.write(1, b"%d\\n" % MPI.COMM_WORLD.Get_rank())'
    dag = make_dag(tmp_path, f"{mpiexec} -n 2 {sys.executable} -c '{code}'")
    assert dag.test().state == "success"
    (out,) = outputs(tmp_path)
    assert sorted(out.read_text().split()) == ["0", "1"]


def test_failing_job_fails_task_with_exit_code_and_log_tail(
    slurm_conn: str, tmp_path: Path
) -> None:
    errors: list[str] = []
    dag = make_dag(tmp_path, "echo preparing\necho 'detector offline' >&2\nexit 7\n", errors)
    assert dag.test().state == "failed"
    (message,) = errors
    assert "ended failed" in message and "exit code 7" in message
    assert "preparing" in message and "detector offline" in message


def test_retry_resumes_the_submitted_job(slurm_conn: str, tmp_path: Path) -> None:
    """A try that dies after submitting is retried; the retry finds the job by name."""
    from airflow_provider_lclstream.operators.submit_job import SubmitJobOperator

    marker = tmp_path / "crashed-once"

    class CrashOnce(SubmitJobOperator):
        def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
            if not marker.exists():
                marker.write_text("x")
                raise RuntimeError("worker lost after the job finished")
            return super().execute_complete(context, event)

    dag = make_dag(
        tmp_path,
        f"echo ran >> {tmp_path}/runs.txt",
        operator=CrashOnce,
        retries=1,
        retry_delay=dt.timedelta(0),
    )
    assert dag.test().state == "success"
    assert marker.exists()
    assert len(outputs(tmp_path)) == 1
    assert (tmp_path / "runs.txt").read_text() == "ran\n"
