"""The transfer's waits in real Airflow 3.3 (``dag.test()``, local backend, a real buffer job).

``dag.test()`` runs a deferred task's trigger inline and then ``execute_complete``, as a
triggerer and a worker would. The operators below are subclasses that only note that
``execute_complete`` ran, which proves the wait was deferred (not polled in the worker).
"""

from __future__ import annotations

import datetime as dt
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.backends.local import LocalBackend
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.exceptions import JobBackendError
from airflow_provider_lclstream.operators.transfer import (
    ConsumerOperator,
    LCLStreamerOperator,
    StartBufferOperator,
    StopJobsOperator,
    WaitJobsOperator,
)
from tests.dags.dag_runner import register, task_states

pytestmark = pytest.mark.airflow

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
REQUEST = {"synthetic": True}


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBackend]:
    """The local backend the tasks use (``[lclstream] jobs_dir``); leftovers are cancelled."""
    root = tmp_path / "jobs"
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(root))
    local = LocalBackend(root, kill_grace=1.0)
    yield local
    for job in root.iterdir() if root.exists() else ():
        if job.is_dir():
            local.cancel(job.name)


RESUMED: list[str] = []


class NotingWait(WaitJobsOperator):
    def execute_complete(self, context: Any, event: dict[str, Any], **kwargs: Any) -> Any:
        RESUMED.append(self.task_id)
        return super().execute_complete(context, event, **kwargs)


class NotingBuffer(StartBufferOperator):
    def execute_complete(self, context: Any, event: dict[str, Any], **kwargs: Any) -> Any:
        RESUMED.append(self.task_id)
        return super().execute_complete(context, event, **kwargs)


class NotingConsumers(ConsumerOperator):
    def execute_complete(self, context: Any, event: dict[str, Any], **kwargs: Any) -> Any:
        RESUMED.append(self.task_id)
        return super().execute_complete(context, event, **kwargs)


def wait_dag(scripts: list[str], errors: list[str], **wait_kwargs: Any) -> Any:
    """``submit`` starts one local job per script (XCom ``job_ids``); ``wait`` waits for them."""
    from airflow.sdk import DAG, task

    with DAG(f"test_wait_jobs_{uuid.uuid4().hex[:8]}", schedule=None, start_date=START) as dag:

        @task
        def submit(ti: Any = None) -> None:
            from airflow_provider_lclstream.hooks.job_backend import JobBackendHook

            local = JobBackendHook(None).get_conn()
            ids = [local.submit(JobSpec(name=f"c{i}", script=s)) for i, s in enumerate(scripts)]
            ti.xcom_push(key="job_ids", value=ids)

        wait = NotingWait(
            task_id="wait",
            request=REQUEST,
            jobs_from=("submit", "job_ids"),
            poll_interval=0.2,
            max_poll_interval=0.5,
            on_failure_callback=lambda context: errors.append(str(context.get("exception"))),
            **wait_kwargs,
        )
        submit() >> wait
    register(dag)
    return dag


def test_wait_jobs_defers_after_its_grace_and_returns_every_state(backend: LocalBackend) -> None:
    RESUMED.clear()
    errors: list[str] = []
    dag = wait_dag(["sleep 2; echo c0 done", "sleep 2.5; echo c1 done"], errors, grace_s=0.3)
    run = dag.test()
    assert run.state == "success", (task_states(run), errors)
    assert RESUMED == ["wait"]  # deferred: execute_complete ran
    done = run.get_task_instance("wait").xcom_pull(task_ids="wait")
    assert len(done) == 2 and {job["state"] for job in done.values()} == {"completed"}


def test_wait_jobs_ending_within_the_grace_does_not_defer(backend: LocalBackend) -> None:
    RESUMED.clear()
    errors: list[str] = []
    dag = wait_dag(["echo quick"], errors, grace_s=10.0)
    run = dag.test()
    assert run.state == "success", errors
    assert RESUMED == []


def test_a_deferred_wait_fails_early_with_the_failed_jobs_log(backend: LocalBackend) -> None:
    RESUMED.clear()
    errors: list[str] = []
    dag = wait_dag(["sleep 60", "sleep 1.5; echo out of disk >&2; exit 5"], errors, grace_s=0.3)
    started = time.monotonic()
    run = dag.test()
    assert run.state == "failed"
    assert time.monotonic() - started < 30  # not after the 60 s job
    assert RESUMED == ["wait"]
    (message,) = errors
    assert "consumer job" in message and "ended failed (exit code 5)" in message
    assert "out of disk" in message


def test_not_deferrable_polls_in_the_worker(backend: LocalBackend) -> None:
    RESUMED.clear()
    errors: list[str] = []
    dag = wait_dag(["sleep 1; echo polled"], errors, grace_s=0.0, deferrable=False)
    run = dag.test()
    assert run.state == "success", errors
    assert RESUMED == []


def buffer_dag(errors: list[str], request: dict[str, Any], *, consumers: bool) -> Any:
    """``start_buffer`` (waiting itself unless ``consumers``), optionally ``start_consumers``
    waiting instead, and the teardown that stops every job."""
    from airflow.sdk import DAG

    def note(context: Any) -> None:
        errors.append(str(context.get("exception")))

    with DAG(f"test_buffer_wait_{uuid.uuid4().hex[:8]}", schedule=None, start_date=START) as dag:
        buffer = NotingBuffer(
            task_id="start_buffer",
            request=request,
            wait_ready=not consumers,
            ready_timeout=60,
            ready_grace_s=0.0,  # check once, then defer
            deferrable=True,
            on_failure_callback=note,
        )
        last: Any = buffer
        if consumers:
            last = NotingConsumers(
                task_id="start_consumers",
                request=request,
                buffer_ready_timeout=60,
                ready_grace_s=0.0,
                deferrable=True,
                on_failure_callback=note,
            )
            buffer >> last
        stop = StopJobsOperator(
            task_id="stop_jobs",
            request=request,
            jobs_from={
                "buffer": ("start_buffer", "job_id"),
                "consumer": ("start_consumers", "job_ids"),
            },
        )
        last >> stop.as_teardown(setups=buffer)
    register(dag)
    return dag


def test_start_buffer_defers_until_the_buffer_answers(backend: LocalBackend) -> None:
    RESUMED.clear()
    errors: list[str] = []
    run = buffer_dag(errors, REQUEST, consumers=False).test()
    assert run.state == "success", (task_states(run), errors)
    assert RESUMED == ["start_buffer"]
    result = run.get_task_instance("start_buffer").xcom_pull(task_ids="start_buffer")
    assert result["metrics_url"].startswith("http://") and result["job_id"]
    # the teardown stopped the persistent buffer (which exits 0 on SIGTERM)
    stopped = run.get_task_instance("stop_jobs").xcom_pull(task_ids="stop_jobs")
    assert stopped == {"buffer": [result["job_id"]]}
    assert backend.state(result["job_id"]).is_final


def test_consumers_fail_with_the_log_of_a_buffer_that_could_not_start(
    backend: LocalBackend,
) -> None:
    RESUMED.clear()
    errors: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = [taken.getsockname()[1], *(_free_port() for _ in range(2))]
        request = {**REQUEST, "buffer_ports": ports}
        run = buffer_dag(errors, request, consumers=True).test()
    states = task_states(run)
    assert states["start_buffer"] == "success" and states["start_consumers"] == "failed", states
    (message,) = errors
    assert "before it answered" in message and "exit code" in message, message
    assert states["stop_jobs"] == "success"


@pytest.mark.parametrize("deferrable", [True, False])
def test_streamer_fails_at_once_with_the_log_of_a_buffer_that_could_not_start(
    backend: LocalBackend, deferrable: bool
) -> None:
    """The streamer's wait is guarded by the buffer job: a buffer that cannot bind its port ends
    the wait within seconds (not the streamer's 60 s send timeout) and the streamer is cancelled."""
    from airflow.sdk import DAG

    errors: list[str] = []

    def note(context: Any) -> None:
        errors.append(str(context.get("exception")))

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = [taken.getsockname()[1], *(_free_port() for _ in range(2))]
        request = {**REQUEST, "events": 100000, "buffer_ports": ports}
        with DAG(f"test_guard_{uuid.uuid4().hex[:8]}", schedule=None, start_date=START) as dag:
            buffer = StartBufferOperator(
                task_id="start_buffer", request=request, wait_ready=False, deferrable=deferrable
            )
            streamer = LCLStreamerOperator(
                task_id="run_streamer",
                request=request,
                poll_interval=0.2,
                max_poll_interval=0.5,
                settle_s=0,
                deferrable=deferrable,
                on_failure_callback=note,
            )
            buffer >> streamer
        register(dag)
        started = time.monotonic()
        run = dag.test()
        took = time.monotonic() - started
    states = task_states(run)
    assert states == {"start_buffer": "success", "run_streamer": "failed"}, (states, errors)
    (message,) = errors
    assert "while job" in message and "last lines of the job log" in message, message
    assert took < 45, took  # the guard, not the streamer's 60 s send timeout, ended it
    streamer_job = run.get_task_instance("run_streamer").xcom_pull(
        task_ids="run_streamer", key="job_id"
    )
    deadline = time.monotonic() + 15
    while not backend.state(streamer_job).is_final and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend.state(streamer_job).state is JobState.CANCELLED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_buffer_timeout_event_cancels_the_buffer(backend: LocalBackend) -> None:
    """The trigger's ``timeout`` event: the buffer job is cancelled and the task fails."""
    job = backend.submit(JobSpec(name="buffer", script="sleep 60"))
    op = StartBufferOperator(task_id="start_buffer", request=REQUEST, ready_timeout=5)
    event = {"status": "timeout", "job_id": job, "metrics_url": "http://127.0.0.1:9"}
    with pytest.raises(JobBackendError, match="did not answer on http://127.0.0.1:9 within 5 s"):
        op.execute_complete({}, event)  # type: ignore[arg-type]
    deadline = time.monotonic() + 15
    while not backend.state(job).is_final and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend.state(job).state is JobState.CANCELLED
