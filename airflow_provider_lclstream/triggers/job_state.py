"""Triggers that watch batch jobs: :class:`JobStateTrigger` one job until it ends, streaming its
log into the trigger log; :class:`JobsStateTrigger` several until all ended (see its docstring).

Events of ``JobStateTrigger`` (plain JSON):

- ``{"status": "success" | "failed", "job_id", "state", "native_state", "exit_code", "reason",
  "log_offset", "log_tail"}`` when the job reached a final state (``log_tail``: the last
  ``log_tail_bytes`` of the log for a failed job, else ``""``);
- ``{"status": "running", ..., "log_offset"}`` after ``resume_after`` seconds, if set, so the
  task can log progress and defer again;
- ``{"status": "error", "job_id", "message"}`` when the backend cannot be reached
  ``max_errors`` times in a row, or does not know the job;
- ``{"status": "failed", "guard": True, "job_id": <the guard job>, ...}`` when one of
  ``guard_jobs`` (``[conn_id, job_id]``, e.g. the buffer a streamer sends to) ended while the
  watched job still ran: the watched job cannot succeed without it, so the wait ends at once with
  the guard's log instead of at the watched job's own timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_lclstream.exceptions import JobBackendError, JobFailedError, JobNotFoundError
from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.hooks.linked_jobs import acancel_all
from airflow_provider_lclstream.triggers.polling import (
    StateQueryFailed,
    log_tail_or_note,
    query_state,
)
from airflow_provider_lclstream.triggers.settle import settled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from airflow_provider_lclstream.backends.base import JobBackend, JobStatus


def raise_for_event(event: Mapping[str, Any], name: str | None = None) -> str:
    """Return the job id of a ``JobStateTrigger`` success event; raise for failed or error.

    (The operators' and sensors' reading of this trigger's events, defined next to them.)
    """
    status = event.get("status")
    job_id = str(event.get("job_id"))
    if status == "success":
        return job_id
    if status == "error":
        raise JobBackendError(f"lost track of job {job_id}: {event.get('message')}")
    if status == "failed":
        raise JobFailedError(
            job_id,
            str(event.get("state")),
            native_state=event.get("native_state"),
            exit_code=event.get("exit_code"),
            reason=event.get("reason"),
            log_tail=event.get("log_tail") or "",
            name=name,
        )
    raise JobBackendError(f"unexpected event for job {job_id}: {dict(event)!r}")


class JobStateTrigger(BaseTrigger):
    """Poll ``job_id`` through the backend of ``conn_id`` with backoff until it ends.

    The interval starts at ``poll_interval``, grows by ``backoff`` while the state does not
    change, up to ``max_poll_interval``, and starts over on every state change. ``backend`` (a
    registry name) with ``backend_kwargs`` builds a backend without a connection.
    """

    def __init__(
        self,
        job_id: str,
        conn_id: str | None = None,
        *,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        backoff: float = 1.5,
        log_offset: int = 0,
        stream_logs: bool = True,
        log_tail_bytes: int = 4000,
        resume_after: float | None = None,
        max_errors: int = 5,
        backend: str | None = None,
        backend_kwargs: dict[str, Any] | None = None,
        linked_jobs: list[list[Any]] | None = None,
        guard_jobs: list[list[Any]] | None = None,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(float(max_poll_interval), self.poll_interval)
        self.backoff = max(float(backoff), 1.0)
        self.log_offset = int(log_offset)
        self.stream_logs = stream_logs
        self.log_tail_bytes = int(log_tail_bytes)
        self.resume_after = resume_after
        self.max_errors = int(max_errors)
        self.backend = backend
        self.backend_kwargs = dict(backend_kwargs or {})
        self.linked_jobs = [list(job) for job in linked_jobs or []]
        self.guard_jobs = [list(job) for job in guard_jobs or []]
        self.not_before = not_before
        self._client: JobBackend | None = None
        self._guard_clients: dict[str | None, JobBackend] = {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "conn_id": self.conn_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "backoff": self.backoff,
                "log_offset": self.log_offset,
                "stream_logs": self.stream_logs,
                "log_tail_bytes": self.log_tail_bytes,
                "resume_after": self.resume_after,
                "max_errors": self.max_errors,
                "backend": self.backend,
                "backend_kwargs": self.backend_kwargs,
                "linked_jobs": self.linked_jobs,
                "guard_jobs": self.guard_jobs,
                "not_before": self.not_before,
            },
        )

    async def _connect(self) -> JobBackend:
        """The backend, created once per trigger (the seam tests replace)."""
        if self._client is None:
            if self.backend:
                from airflow_provider_lclstream.backends.base import backend_class

                self._client = backend_class(self.backend)(**self.backend_kwargs)
            else:
                self._client = await JobBackendHook(self.conn_id).aget_conn()
        assert self._client is not None
        return self._client

    def _event(self, status: str, job: JobStatus, **extra: Any) -> TriggerEvent:
        payload = {"status": status, **job.to_dict(), "log_offset": self.log_offset, **extra}
        return TriggerEvent(payload)

    def _error(self, message: str) -> TriggerEvent:
        return TriggerEvent({"status": "error", "job_id": self.job_id, "message": message})

    async def _pump_log(self, backend: JobBackend) -> None:
        try:
            text, self.log_offset = await backend.alog_tail(self.job_id, self.log_offset)
        except Exception as err:  # logs are a convenience; the state decides
            self.log.debug("cannot read the log of job %s: %s", self.job_id, err)
            return
        if text:
            self.log.info("[job %s]\n%s", self.job_id, text.rstrip("\n"))

    async def _ended_guard(self) -> TriggerEvent | None:
        """A ``failed`` event for the first guard job that reached a final state, else None
        (a guard whose state cannot be read is skipped: the watched job's own state decides)."""
        for conn_id, job_id in self.guard_jobs:
            try:
                backend = self._guard_clients.get(conn_id)
                if backend is None:
                    backend = await JobBackendHook(conn_id).aget_conn()
                    self._guard_clients[conn_id] = backend
                status = await backend.astate(str(job_id))
                if not status.is_final:
                    continue
                tail, _ = await backend.alog_tail(str(job_id), -self.log_tail_bytes)
            except Exception as err:
                self.log.debug("guard job %s: state not readable: %s", job_id, err)
                continue
            reason = f"job {job_id} ended {status.state.value} while job {self.job_id} ran"
            return TriggerEvent(
                {
                    "status": "failed",
                    **status.to_dict(),
                    "reason": reason,
                    "guard": True,
                    "watched_job_id": self.job_id,
                    "log_offset": self.log_offset,
                    "log_tail": tail,
                }
            )
        return None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async for event in settled(self._events(), self.not_before):
            yield event

    async def _events(self) -> AsyncIterator[TriggerEvent]:
        try:
            backend = await self._connect()
        except Exception as err:
            yield self._error(f"cannot create the job backend: {type(err).__name__}: {err}")
            return
        started = time.monotonic()
        interval = self.poll_interval
        last_state = None
        while True:
            try:
                status = await query_state(
                    backend,
                    self.job_id,
                    max_errors=self.max_errors,
                    wait_s=interval,
                    max_wait_s=self.max_poll_interval,
                    backoff=self.backoff,
                    log=self.log,
                )
            except (JobNotFoundError, StateQueryFailed) as err:
                yield self._error(str(err))
                return
            if self.stream_logs:
                await self._pump_log(backend)
            if status.is_final:
                tail = ""
                if not status.state.is_success:
                    tail = await log_tail_or_note(backend, self.job_id, self.log_tail_bytes)
                ok = status.state.is_success
                yield self._event("success" if ok else "failed", status, log_tail=tail)
                return
            if self.guard_jobs:
                guard_event = await self._ended_guard()
                if guard_event is not None:
                    yield guard_event
                    return
            if self.resume_after is not None and time.monotonic() - started >= self.resume_after:
                yield self._event("running", status)
                return
            if status.state != last_state:
                if last_state is not None:
                    self.log.info("job %s is %s", self.job_id, status.state.value)
                last_state = status.state
                interval = self.poll_interval
            else:
                interval = min(interval * self.backoff, self.max_poll_interval)
            await asyncio.sleep(interval)

    async def on_kill(self) -> None:
        """The user killed the deferred task (mark failed/success, clear): cancel the job."""
        try:
            backend = await self._connect()
            await backend.acancel(self.job_id)
            self.log.info("cancelled job %s", self.job_id)
        except Exception as err:  # the linked jobs must still be cancelled
            self.log.warning("could not cancel job %s: %s", self.job_id, err)
        if self.linked_jobs:  # e.g. the buffer and consumers of a transfer's streamer
            await acancel_all(self.linked_jobs)

    async def cleanup(self) -> None:
        for client in [self._client, *self._guard_clients.values()]:
            if client is None:
                continue
            try:
                await client.aclose()
            except Exception as err:
                self.log.debug("closing the job backend failed: %s", err)
        self._client = None
        self._guard_clients = {}


class JobsStateTrigger(BaseTrigger):
    """Poll several jobs of connection ``conn_id`` until every one ended; fire at once when one
    ended other than ``completed``.

    Events (plain JSON; ``jobs`` maps each job that ended so far to its state fields):

    - ``{"status": "success", "jobs"}`` when all completed (each one's last ``log_tail_bytes``
      of log go to the trigger's log);
    - ``{"status": "failed", "job_id", "state", ..., "log_tail", "jobs"}`` for the first job
      that did not complete;
    - ``{"status": "timeout", "pending", "jobs"}`` once ``deadline`` (epoch seconds) passed;
    - ``{"status": "error", "job_id", "message"}`` when the backend does not know a job or failed
      ``max_errors`` polls in a row.

    The interval starts at ``poll_interval`` and grows by ``backoff`` (up to
    ``max_poll_interval``) while no job ends. ``linked_jobs`` are cancelled when a user kills
    the task.
    """

    def __init__(
        self,
        job_ids: list[str],
        conn_id: str | None = None,
        *,
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        backoff: float = 1.5,
        deadline: float | None = None,
        log_tail_bytes: int = 2000,
        max_errors: int = 5,
        linked_jobs: list[list[Any]] | None = None,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.job_ids = [str(job_id) for job_id in job_ids]
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(float(max_poll_interval), self.poll_interval)
        self.backoff = max(float(backoff), 1.0)
        self.deadline = None if deadline is None else float(deadline)
        self.log_tail_bytes = int(log_tail_bytes)
        self.max_errors = int(max_errors)
        self.linked_jobs = [list(job) for job in linked_jobs or []]
        self.not_before = not_before
        self._client: JobBackend | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_ids": self.job_ids,
                "conn_id": self.conn_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "backoff": self.backoff,
                "deadline": self.deadline,
                "log_tail_bytes": self.log_tail_bytes,
                "max_errors": self.max_errors,
                "linked_jobs": self.linked_jobs,
                "not_before": self.not_before,
            },
        )

    async def _connect(self) -> JobBackend:
        """The backend of ``conn_id``, created once per trigger."""
        if self._client is None:
            self._client = await JobBackendHook(self.conn_id).aget_conn()
        return self._client

    def _error(self, job_id: str, message: str) -> TriggerEvent:
        return TriggerEvent({"status": "error", "job_id": job_id, "message": message})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async for event in settled(self._events(), self.not_before):
            yield event

    async def _events(self) -> AsyncIterator[TriggerEvent]:
        try:
            backend = await self._connect()
        except Exception as err:
            yield self._error(",".join(self.job_ids), f"cannot create the job backend: {err}")
            return
        pending = list(self.job_ids)
        ended: dict[str, dict[str, Any]] = {}
        interval = self.poll_interval
        while pending:
            changed = False
            for job_id in list(pending):
                try:
                    status = await query_state(
                        backend,
                        job_id,
                        max_errors=self.max_errors,
                        wait_s=interval,
                        max_wait_s=self.max_poll_interval,
                        backoff=self.backoff,
                        log=self.log,
                    )
                except (JobNotFoundError, StateQueryFailed) as err:
                    yield self._error(job_id, str(err))
                    return
                if not status.is_final:
                    continue
                pending.remove(job_id)
                ended[job_id] = status.to_dict()
                changed = True
                tail = await log_tail_or_note(backend, job_id, self.log_tail_bytes)
                self.log.info("job %s ended %s\n%s", job_id, status.state.value, tail)
                if not status.state.is_success:
                    yield TriggerEvent(
                        {"status": "failed", **status.to_dict(), "log_tail": tail, "jobs": ended}
                    )
                    return
            if not pending:
                break
            if self.deadline is not None and time.time() >= self.deadline:
                yield TriggerEvent({"status": "timeout", "pending": pending, "jobs": ended})
                return
            grown = min(interval * self.backoff, self.max_poll_interval)
            interval = self.poll_interval if changed else grown
            await asyncio.sleep(interval)
        yield TriggerEvent({"status": "success", "jobs": ended})

    async def on_kill(self) -> None:
        """The user killed the deferred task: cancel the linked jobs (the transfer's)."""
        if self.linked_jobs:
            await acancel_all(self.linked_jobs)

    async def cleanup(self) -> None:
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception as err:
                self.log.debug("closing the job backend failed: %s", err)
            self._client = None
