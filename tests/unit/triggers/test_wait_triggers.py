"""BufferReadyTrigger and JobsStateTrigger against real local jobs and a real HTTP server.

The triggers reach the local backend through ``JobBackendHook(None)``, whose job directory is
``[lclstream] jobs_dir`` (set per test); the "buffer" is a real HTTP server on a free port.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.backends.local import LocalBackend
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.transfer.jobs import free_port
from airflow_provider_lclstream.triggers.buffer import BufferReadyTrigger
from airflow_provider_lclstream.triggers.job_state import JobsStateTrigger


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBackend]:
    root = tmp_path / "jobs"
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(root))
    local = LocalBackend(root, kill_grace=1.0)
    yield local
    for job in root.iterdir() if root.exists() else ():  # stop what a test left running
        if job.is_dir():
            local.cancel(job.name)


class Stats(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/stats" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stats_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stats)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def silent_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def collect(trigger: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        try:
            return [event.payload async for event in trigger.run()]
        finally:
            await trigger.cleanup()

    return asyncio.run(run())


def wait_final(backend: LocalBackend, job_id: str, timeout: float = 15.0) -> JobState:
    deadline = time.monotonic() + timeout
    while not backend.state(job_id).is_final and time.monotonic() < deadline:
        time.sleep(0.1)
    return backend.state(job_id).state


# -- BufferReadyTrigger ----------------------------------------------------------------------


def test_buffer_trigger_serialize_round_trip() -> None:
    trigger = BufferReadyTrigger(
        "http://h:1/", "job-1", "lclstream_slurm", deadline=123.5, not_before=100.0
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_lclstream.triggers.buffer.BufferReadyTrigger"
    assert BufferReadyTrigger(**kwargs).serialize() == (path, kwargs)
    assert kwargs["metrics_url"] == "http://h:1" and kwargs["deadline"] == 123.5
    import json

    assert json.loads(json.dumps(kwargs)) == kwargs  # plain JSON


def test_buffer_trigger_fires_once_the_buffer_answers(
    backend: LocalBackend, stats_server: str
) -> None:
    job = backend.submit(JobSpec(name="buffer", script="sleep 30"))
    trigger = BufferReadyTrigger(stats_server, job, None, deadline=time.time() + 20)
    started = time.monotonic()
    (event,) = collect(trigger)
    assert event == {"status": "success", "job_id": job, "metrics_url": stats_server}
    assert time.monotonic() - started < 5
    assert trigger._http is None and trigger._backend is None  # cleanup closed both


def test_buffer_trigger_fails_with_the_log_of_a_job_that_ended(backend: LocalBackend) -> None:
    job = backend.submit(JobSpec(name="buffer", script="echo cannot bind the port; exit 3"))
    (event,) = collect(BufferReadyTrigger(silent_url(), job, None, deadline=time.time() + 30))
    assert event["status"] == "failed" and event["job_id"] == job, event
    assert event["state"] == "failed" and event["exit_code"] == 3
    assert "cannot bind the port" in event["log_tail"]


def test_buffer_trigger_times_out(backend: LocalBackend) -> None:
    job = backend.submit(JobSpec(name="buffer", script="sleep 30"))
    url = silent_url()
    started = time.monotonic()
    (event,) = collect(
        BufferReadyTrigger(url, job, None, deadline=time.time() + 1.0, poll_interval=0.2)
    )
    assert event == {"status": "timeout", "job_id": job, "metrics_url": url}
    assert 0.9 < time.monotonic() - started < 5
    assert not backend.state(job).is_final  # the operator, not the trigger, cancels it


def test_buffer_trigger_unknown_job_is_an_error_event(backend: LocalBackend) -> None:
    (event,) = collect(
        BufferReadyTrigger(silent_url(), "nope-20250101-abc", None, deadline=time.time() + 5)
    )
    assert event["status"] == "error" and "nope-20250101-abc" in event["message"]


# -- JobsStateTrigger ------------------------------------------------------------------------


def test_jobs_trigger_serialize_round_trip() -> None:
    trigger = JobsStateTrigger(
        ["a", "b"], "lclstream_slurm", deadline=99.0, linked_jobs=[[None, "a"], ["c", "x"]]
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_lclstream.triggers.job_state.JobsStateTrigger"
    assert JobsStateTrigger(**kwargs).serialize() == (path, kwargs)
    import json

    assert json.loads(json.dumps(kwargs)) == kwargs


def test_jobs_trigger_succeeds_when_all_completed(backend: LocalBackend) -> None:
    jobs = [
        backend.submit(JobSpec(name=f"consumer{i}", script=f"sleep 0.{i + 3}; echo done {i}"))
        for i in range(2)
    ]
    (event,) = collect(JobsStateTrigger(jobs, None, poll_interval=0.1, max_poll_interval=0.3))
    assert event["status"] == "success", event
    assert set(event["jobs"]) == set(jobs)
    assert {job["state"] for job in event["jobs"].values()} == {"completed"}


def test_jobs_trigger_fires_as_soon_as_one_fails(backend: LocalBackend) -> None:
    slow = backend.submit(JobSpec(name="slow", script="sleep 30"))
    bad = backend.submit(JobSpec(name="bad", script="echo disk full >&2; exit 5"))
    started = time.monotonic()
    (event,) = collect(JobsStateTrigger([slow, bad], None, poll_interval=0.1))
    assert time.monotonic() - started < 10
    assert event["status"] == "failed" and event["job_id"] == bad, event
    assert event["exit_code"] == 5 and "disk full" in event["log_tail"]
    assert list(event["jobs"]) == [bad]


def test_jobs_trigger_times_out_naming_the_pending_jobs(backend: LocalBackend) -> None:
    slow = backend.submit(JobSpec(name="slow", script="sleep 30"))
    (event,) = collect(
        JobsStateTrigger([slow], None, poll_interval=0.1, deadline=time.time() + 0.8)
    )
    assert event == {"status": "timeout", "pending": [slow], "jobs": {}}


def test_jobs_trigger_unknown_job_is_an_error_event(backend: LocalBackend) -> None:
    (event,) = collect(JobsStateTrigger(["nope-20250101-abc"], None))
    assert event["status"] == "error" and event["job_id"] == "nope-20250101-abc"


def test_jobs_trigger_on_kill_cancels_the_linked_jobs(backend: LocalBackend) -> None:
    buffer = backend.submit(JobSpec(name="buffer", script="sleep 60"))
    consumer = backend.submit(JobSpec(name="consumer", script="sleep 60"))
    trigger = JobsStateTrigger([consumer], None, linked_jobs=[[None, buffer], [None, consumer]])
    asyncio.run(trigger.on_kill())
    assert wait_final(backend, buffer) is JobState.CANCELLED
    assert wait_final(backend, consumer) is JobState.CANCELLED
