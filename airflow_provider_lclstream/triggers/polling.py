"""Reading job states on the triggerer: one retry policy for every trigger that polls a job.

:func:`query_state` asks the backend's async half for a job's state and retries a failed query
(a service restarting, a dropped connection) with backoff, up to ``max_errors`` attempts in a
row; a job the backend does not know is not retried. :class:`JobStateTrigger`,
:class:`JobsStateTrigger` and :class:`BufferReadyTrigger` all poll through it, so they fail the
same way, with the same message, after the same number of tries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from airflow_provider_lclstream.exceptions import JobBackendError, JobNotFoundError

if TYPE_CHECKING:
    from airflow_provider_lclstream.backends.base import JobBackend, JobStatus


class StateQueryFailed(JobBackendError):
    """``max_errors`` state queries in a row failed; the message names the last error."""


async def query_state(
    backend: JobBackend,
    job_id: str,
    *,
    max_errors: int,
    wait_s: float,
    max_wait_s: float | None = None,
    backoff: float = 1.0,
    log: Any,
    what: str = "job",
) -> JobStatus:
    """``backend.astate(job_id)``, retried after ``wait_s`` (growing by ``backoff`` up to
    ``max_wait_s``) while it fails, at most ``max_errors`` attempts in all.

    Raises :class:`JobNotFoundError` at once, :class:`StateQueryFailed` after the last attempt.
    """
    attempts = max(1, int(max_errors))

    def warn(state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s %s: state query failed (%d/%d): %s",
            what,
            job_id,
            state.attempt_number,
            attempts,
            err,
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(
            multiplier=wait_s, exp_base=max(backoff, 1.0), max=max(max_wait_s or wait_s, wait_s)
        ),
        retry=retry_if_not_exception_type(JobNotFoundError),
        before_sleep=warn,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await backend.astate(job_id)
    except JobNotFoundError:
        raise
    except Exception as err:
        log.warning("%s %s: state query failed (%d/%d): %s", what, job_id, attempts, attempts, err)
        raise StateQueryFailed(
            f"{attempts} state queries in a row failed; last: {type(err).__name__}: {err}"
        ) from err
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


async def log_tail_or_note(backend: JobBackend, job_id: str, nbytes: int) -> str:
    """The last ``nbytes`` of the job's log, or a note saying why it cannot be read (a log is
    a convenience: the state decides)."""
    if nbytes <= 0:
        return ""
    try:
        tail, _ = await backend.alog_tail(job_id, -nbytes)
    except Exception as err:
        return f"(log not readable: {err})"
    return tail
