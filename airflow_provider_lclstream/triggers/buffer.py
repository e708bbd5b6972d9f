"""Wait until a transfer's buffer answers on its metrics port; fail early when its job ended.

Polls ``GET <metrics_url>/stats`` (one ``httpx.AsyncClient`` for the whole wait) and, between
polls, the buffer job's state through the job backend's async half. Events (plain JSON):

- ``{"status": "success", "job_id", "metrics_url"}`` once ``/stats`` answered 200;
- ``{"status": "failed", "job_id", "state", "native_state", "exit_code", "reason", "log_tail"}``
  when the buffer's job ended before it answered (``log_tail``: its last ``log_tail_bytes``);
- ``{"status": "timeout", "job_id", "metrics_url"}`` once ``deadline`` (epoch seconds) passed;
- ``{"status": "error", "job_id", "message"}`` when the job backend cannot be created, does not
  know the job, or failed ``max_errors`` state queries in a row (a failed query is retried in
  place every ``poll_interval``: ``triggers/polling.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_lclstream.exceptions import JobNotFoundError
from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.triggers.polling import (
    StateQueryFailed,
    log_tail_or_note,
    query_state,
)
from airflow_provider_lclstream.triggers.settle import settled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_lclstream.backends.base import JobBackend


class BufferReadyTrigger(BaseTrigger):
    """Poll ``{metrics_url}/stats`` and job ``job_id`` (connection ``conn_id``) every
    ``poll_interval`` seconds until the buffer answers, its job ends, or ``deadline`` passes."""

    def __init__(
        self,
        metrics_url: str,
        job_id: str,
        conn_id: str | None = None,
        *,
        deadline: float,
        poll_interval: float = 0.5,
        log_tail_bytes: int = 4000,
        max_errors: int = 5,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.metrics_url = metrics_url.rstrip("/")
        self.job_id = str(job_id)
        self.conn_id = conn_id
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.log_tail_bytes = int(log_tail_bytes)
        self.max_errors = int(max_errors)
        self.not_before = not_before
        self._http: httpx.AsyncClient | None = None
        self._backend: JobBackend | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "metrics_url": self.metrics_url,
                "job_id": self.job_id,
                "conn_id": self.conn_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "log_tail_bytes": self.log_tail_bytes,
                "max_errors": self.max_errors,
                "not_before": self.not_before,
            },
        )

    async def _connect(self) -> tuple[httpx.AsyncClient, JobBackend]:
        """The HTTP client and the job backend, created once per trigger."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=2.0)
        if self._backend is None:
            self._backend = await JobBackendHook(self.conn_id).aget_conn()
        return self._http, self._backend

    def _error(self, message: str) -> TriggerEvent:
        return TriggerEvent({"status": "error", "job_id": self.job_id, "message": message})

    async def _answers(self, http: httpx.AsyncClient) -> bool:
        try:
            return (await http.get(f"{self.metrics_url}/stats")).status_code == 200
        except httpx.HTTPError:  # not listening yet
            return False

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async for event in settled(self._events(), self.not_before):
            yield event

    async def _events(self) -> AsyncIterator[TriggerEvent]:
        try:
            http, backend = await self._connect()
        except Exception as err:
            yield self._error(f"cannot create the job backend: {type(err).__name__}: {err}")
            return
        while True:
            if await self._answers(http):
                yield TriggerEvent(
                    {"status": "success", "job_id": self.job_id, "metrics_url": self.metrics_url}
                )
                return
            try:
                status = await query_state(
                    backend,
                    self.job_id,
                    max_errors=self.max_errors,
                    wait_s=self.poll_interval,
                    log=self.log,
                    what="buffer job",
                )
            except (JobNotFoundError, StateQueryFailed) as err:
                yield self._error(str(err))
                return
            if status.is_final:
                tail = await log_tail_or_note(backend, self.job_id, self.log_tail_bytes)
                yield TriggerEvent({"status": "failed", **status.to_dict(), "log_tail": tail})
                return
            if time.time() >= self.deadline:
                yield TriggerEvent(
                    {"status": "timeout", "job_id": self.job_id, "metrics_url": self.metrics_url}
                )
                return
            await asyncio.sleep(self.poll_interval)

    async def cleanup(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._backend is not None:
            try:
                await self._backend.aclose()
            except Exception as err:
                self.log.debug("closing the job backend failed: %s", err)
            self._backend = None
