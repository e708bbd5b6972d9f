"""``query_state``: the one retry policy of every trigger that polls a job's state."""

from __future__ import annotations

import logging
import time

import pytest

from airflow_provider_lclstream.backends.base import BaseJobBackend, JobState, JobStatus
from airflow_provider_lclstream.exceptions import JobNotFoundError
from airflow_provider_lclstream.triggers.buffer import BufferReadyTrigger
from airflow_provider_lclstream.triggers.job_state import JobsStateTrigger
from airflow_provider_lclstream.triggers.polling import StateQueryFailed, query_state

log = logging.getLogger(__name__)


class Flaky(BaseJobBackend):
    """Fails ``failures`` state queries (``error``), then reports ``state``."""

    name = "flaky"

    def __init__(
        self, failures: int, error: Exception | None = None, state: JobState = JobState.COMPLETED
    ) -> None:
        self.failures, self.calls = failures, 0
        self.error = error or ConnectionError("service down")
        self.final = state

    async def astate(self, job_id: str) -> JobStatus:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return JobStatus(job_id, self.final, "X", 0)

    async def alog_tail(self, job_id: str, offset: int = 0, max_bytes: int = 0):  # type: ignore[no-untyped-def]
        return "the log", offset


async def test_a_failed_query_is_retried_with_backoff_until_it_answers() -> None:
    backend = Flaky(2)
    status = await query_state(backend, "7", max_errors=3, wait_s=0.01, backoff=2, log=log)
    assert status.state is JobState.COMPLETED and backend.calls == 3


async def test_max_errors_in_a_row_fail_with_the_last_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    backend = Flaky(5)
    with pytest.raises(StateQueryFailed, match="3 state queries in a row failed; last: Connection"):
        await query_state(backend, "7", max_errors=3, wait_s=0.01, log=log, what="buffer job")
    assert backend.calls == 3
    assert len([r for r in caplog.records if "state query failed" in r.getMessage()]) == 3


async def test_an_unknown_job_is_not_retried() -> None:
    backend = Flaky(5, error=JobNotFoundError("no job 7"))
    with pytest.raises(JobNotFoundError):
        await query_state(backend, "7", max_errors=3, wait_s=0.01, log=log)
    assert backend.calls == 1


@pytest.mark.parametrize(("failures", "status"), [(2, "success"), (3, "error")])
async def test_jobs_trigger_uses_the_same_cap(failures: int, status: str) -> None:
    trigger = JobsStateTrigger(["7"], poll_interval=0.01, max_errors=3)
    trigger._client = Flaky(failures)  # the _connect seam
    (event,) = [e.payload async for e in trigger.run()]
    assert event["status"] == status
    if status == "error":
        assert "service down" in event["message"]


async def test_buffer_trigger_uses_the_same_cap() -> None:
    trigger = BufferReadyTrigger(
        "http://127.0.0.1:1", "7", deadline=time.time() + 30, poll_interval=0.01, max_errors=2
    )
    trigger._backend = Flaky(1, state=JobState.FAILED)  # the _connect seam
    (event,) = [e.payload async for e in trigger.run()]
    await trigger.cleanup()
    assert event["status"] == "failed" and event["log_tail"] == "the log"
