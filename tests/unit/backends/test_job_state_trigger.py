"""JobStateTrigger: serialize round trip and ``run()`` against the local backend and fakes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from airflow_provider_lclstream.backends.base import BaseJobBackend, JobState, JobStatus
from airflow_provider_lclstream.backends.local import LocalBackend
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.triggers.job_state import JobStateTrigger


def local_trigger(root: Path, job_id: str, **kwargs) -> JobStateTrigger:
    return JobStateTrigger(
        job_id,
        backend="local",
        backend_kwargs={"root": str(root), "kill_grace": 1.0},
        poll_interval=0.05,
        max_poll_interval=0.2,
        **kwargs,
    )


def test_serialize_round_trip_is_plain_json(tmp_path: Path) -> None:
    trigger = local_trigger(tmp_path, "j-1", log_offset=7, resume_after=30.0)
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_lclstream.triggers.job_state.JobStateTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    again = JobStateTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)


async def test_success_event_with_log_offset(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    job_id = backend.submit(JobSpec(name="ok", script="echo hello; sleep 0.2; echo world"))
    events = [e async for e in local_trigger(tmp_path, job_id).run()]
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success" and payload["state"] == "completed"
    assert payload["exit_code"] == 0 and payload["log_tail"] == ""
    assert payload["log_offset"] == len("hello\nworld\n")
    assert json.loads(json.dumps(payload)) == payload


async def test_failed_event_carries_exit_code_and_log_tail(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    job_id = backend.submit(JobSpec(name="bad", script="seq 1 500; echo 'it broke' >&2; exit 2"))
    (event,) = [e async for e in local_trigger(tmp_path, job_id, log_tail_bytes=30).run()]
    payload = event.payload
    assert (payload["status"], payload["state"], payload["exit_code"]) == ("failed", "failed", 2)
    assert payload["log_tail"].endswith("500\nit broke\n") and len(payload["log_tail"]) <= 30


async def test_unknown_job_is_an_error_event(tmp_path: Path) -> None:
    (event,) = [e async for e in local_trigger(tmp_path, "nosuch-20250101T000000-aaaaaa").run()]
    assert event.payload["status"] == "error" and "nosuch" in event.payload["message"]


async def test_resume_after_yields_running_with_offset(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path, kill_grace=1.0)
    job_id = backend.submit(JobSpec(name="slow", script="echo started; sleep 30"))
    trigger = local_trigger(tmp_path, job_id, resume_after=0.5)
    (event,) = [e async for e in trigger.run()]
    assert event.payload["status"] == "running"
    assert event.payload["log_offset"] == len("started\n")
    await trigger.on_kill()
    assert backend.state(job_id).state is JobState.CANCELLED
    await trigger.cleanup()


class Flaky(BaseJobBackend):
    """A backend whose state query fails ``failures`` times, then reports completed."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def astate(self, job_id: str) -> JobStatus:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("service down")
        return JobStatus(job_id, JobState.COMPLETED, "DONE", 0)

    async def alog_tail(self, job_id: str, offset: int = 0, max_bytes: int = 0):
        return "", offset


@pytest.mark.parametrize(("failures", "status"), [(2, "success"), (3, "error")])
async def test_reconnects_are_capped(failures: int, status: str) -> None:
    trigger = JobStateTrigger("7", poll_interval=0.01, max_errors=3)
    fake = Flaky(failures)
    trigger._client = fake  # the _connect seam
    t0 = time.monotonic()
    (event,) = [e async for e in trigger.run()]
    assert event.payload["status"] == status
    assert time.monotonic() - t0 < 2
    if status == "error":
        assert "service down" in event.payload["message"]


async def test_backend_that_cannot_be_built_is_an_error_event() -> None:
    trigger = JobStateTrigger("1", backend="nosuchbackend")
    (event,) = [e async for e in trigger.run()]
    assert event.payload["status"] == "error" and "local" in event.payload["message"]
