"""SubmitJobOperator and JobSensor in real Airflow 3.3 (``dag.test()``) with the local backend.

``dag.test()`` runs each task in-process and runs the trigger of a deferred task inline (see
``airflow.sdk.definitions.dag._run_task``), so these tests go through submit -> defer ->
JobStateTrigger -> execute_complete exactly like a worker and a triggerer would.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.dags.dag_runner import register

pytestmark = pytest.mark.airflow

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def jobs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local backend's job root for this test (tasks run in this process)."""
    root = tmp_path / "jobs"
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(root))
    return root


def make_dag(script: str, *, errors: list[str] | None = None, **op_kwargs: Any) -> Any:
    from airflow.sdk import DAG

    from airflow_provider_lclstream.operators.submit_job import SubmitJobOperator

    def on_failure(context: Any) -> None:
        if errors is not None:
            errors.append(str(context.get("exception")))

    with DAG(f"test_submit_job_{uuid.uuid4().hex[:8]}", schedule=None, start_date=START) as dag:
        SubmitJobOperator(
            task_id="job",
            job={"name": "lcls", "script": script},
            poll_interval=0.1,
            max_poll_interval=0.5,
            on_failure_callback=on_failure,
            **op_kwargs,
        )
    register(dag)
    return dag


def job_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def test_deferrable_job_succeeds(airflow_db: Path, jobs_dir: Path) -> None:
    dag = make_dag("echo hello from the job; sleep 0.5", deferrable=True)
    run = dag.test()
    assert run.state == "success"
    (job,) = job_dirs(jobs_dir)
    assert job.name.startswith("lcls-")
    assert (job / "output.log").read_text() == "hello from the job\n"
    # XCom job_url is the backend's own URL of the job; the "Job" extra link (worked out by the
    # worker, stored in XCom) opens the task's log in Airflow, where the job's output is.
    ti = run.get_task_instance("job")
    assert ti.xcom_pull(task_ids="job", key="job_url") == (job / "output.log").as_uri()
    link = ti.xcom_pull(task_ids="job", key="_link_JobLink")
    assert link.endswith(
        f"/dags/{dag.dag_id}/runs/{quote(run.run_id, safe='')}/tasks/job?try_number=1"
    )


def test_non_deferrable_job_succeeds(airflow_db: Path, jobs_dir: Path) -> None:
    dag = make_dag("echo polled", deferrable=False)
    assert dag.test().state == "success"
    assert len(job_dirs(jobs_dir)) == 1


def test_failing_job_fails_task_with_exit_code_and_log_tail(
    airflow_db: Path, jobs_dir: Path
) -> None:
    errors: list[str] = []
    dag = make_dag("echo preparing; echo 'detector offline' >&2; exit 7", errors=errors)
    run = dag.test()
    assert run.state == "failed"
    (message,) = errors
    assert "exit code 7" in message and "failed" in message
    assert "detector offline" in message and "preparing" in message


def test_rerun_of_same_task_instance_does_not_resubmit(airflow_db: Path, jobs_dir: Path) -> None:
    """The same task instance gives the same job name: the job is found, not resubmitted."""
    dag = make_dag("echo once >> $LCLSTREAM_JOB_DIR/../runs.txt")
    when = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    assert dag.test(logical_date=when, run_after=when).state == "success"
    assert dag.test(logical_date=when, run_after=when).state == "success"
    assert len(job_dirs(jobs_dir)) == 1
    assert (jobs_dir / "runs.txt").read_text() == "once\n"


def test_retry_resumes_the_submitted_job(airflow_db: Path, jobs_dir: Path, tmp_path: Path) -> None:
    """A task that dies after submitting is retried; the retry adopts the job it submitted."""
    from airflow.sdk import DAG

    from airflow_provider_lclstream.operators.submit_job import SubmitJobOperator

    marker = tmp_path / "crashed-once"

    class CrashOnce(SubmitJobOperator):
        def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
            if not marker.exists():
                marker.write_text("x")
                raise RuntimeError("worker lost after the job finished")
            return super().execute_complete(context, event)

    with DAG(f"test_submit_retry_{uuid.uuid4().hex[:8]}", schedule=None, start_date=START) as dag:
        CrashOnce(
            task_id="job",
            job={"script": "echo ran >> $LCLSTREAM_JOB_DIR/../runs.txt"},
            poll_interval=0.1,
            retries=1,
            retry_delay=dt.timedelta(0),
        )
    register(dag)
    assert dag.test().state == "success"
    assert marker.exists()
    assert len(job_dirs(jobs_dir)) == 1
    assert (jobs_dir / "runs.txt").read_text() == "ran\n"


def test_on_kill_cancels_job_found_in_xcom(tmp_path: Path) -> None:
    """After deferral the operator is rebuilt: on_kill finds the job id through XCom."""
    from airflow_provider_lclstream.backends.base import JobState
    from airflow_provider_lclstream.backends.local import LocalBackend
    from airflow_provider_lclstream.config.job import JobSpec
    from airflow_provider_lclstream.operators.submit_job import SubmitJobOperator

    backend = LocalBackend(tmp_path, kill_grace=1.0)
    job_id = backend.submit(JobSpec(name="victim", script="sleep 300"))

    class TI:
        task_id, map_index = "job", -1

        def xcom_pull(self, **kwargs: Any) -> str:
            assert kwargs["key"] == "job_id"
            return job_id

    op = SubmitJobOperator(task_id="job", job={"script": "true"})
    op.hook.__dict__["settings"] = type(op.hook.settings)(root=str(tmp_path), kill_grace=1.0)
    op._context = {"ti": TI()}  # type: ignore[typeddict-item]
    op.on_kill()
    assert backend.state(job_id).state is JobState.CANCELLED


def test_job_sensor_waits_for_a_job_started_elsewhere(airflow_db: Path, jobs_dir: Path) -> None:
    from airflow.sdk import DAG

    from airflow_provider_lclstream.backends.local import LocalBackend
    from airflow_provider_lclstream.config.job import JobSpec
    from airflow_provider_lclstream.sensors.job import JobSensor

    ok = LocalBackend(jobs_dir).submit(JobSpec(name="elsewhere", script="sleep 0.3"))
    with DAG(f"test_job_sensor_{uuid.uuid4().hex[:8]}", schedule=None, start_date=START) as dag:
        JobSensor(task_id="poke", job_id=ok, poke_interval=0.1, deferrable=False)
        JobSensor(task_id="deferred", job_id=ok, poke_interval=0.1, deferrable=True)
    register(dag)
    assert dag.test().state == "success"
