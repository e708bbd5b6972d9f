"""Watch a transfer through its buffer's ``/stats`` until the stream ends.

Events (plain JSON):

- ``{"status": "success" | "failed", "stats": {...}}`` when the buffer finished the stream
  (``failed``: a producer never ended, data was left undelivered, ...; ``stats.problems`` says);
- ``{"status": "error", "message": ...}`` when nothing moved for ``stall_timeout`` seconds, or the
  buffer could not be reached ``max_errors`` times in a row.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_lclstream.transfer.stats import final_stats, progress, stream_finished
from airflow_provider_lclstream.triggers.settle import settled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class TransferTrigger(BaseTrigger):
    """Poll ``{metrics_url}/stats`` every ``poll_interval`` seconds.

    ``linked_jobs`` (``[conn_id, job_id]`` pairs) are cancelled when a user kills the task.
    """

    def __init__(
        self,
        metrics_url: str,
        *,
        poll_interval: float = 2.0,
        stall_timeout: float = 300.0,
        max_errors: int = 10,
        linked_jobs: list[list[Any]] | None = None,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.metrics_url = metrics_url.rstrip("/")
        self.poll_interval = float(poll_interval)
        self.stall_timeout = float(stall_timeout)
        self.max_errors = int(max_errors)
        self.linked_jobs = [list(job) for job in linked_jobs or []]
        self.not_before = not_before
        self._client: httpx.AsyncClient | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "metrics_url": self.metrics_url,
                "poll_interval": self.poll_interval,
                "stall_timeout": self.stall_timeout,
                "max_errors": self.max_errors,
                "linked_jobs": self.linked_jobs,
                "not_before": self.not_before,
            },
        )

    def _connect(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        return self._client

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async for event in settled(self._events(), self.not_before):
            yield event

    async def _events(self) -> AsyncIterator[TriggerEvent]:
        errors = 0
        last_progress: tuple[int, int] | None = None
        last_change = time.monotonic()
        try:
            while True:
                try:
                    response = await self._connect().get(f"{self.metrics_url}/stats")
                    response.raise_for_status()
                    stats = response.json()
                    errors = 0
                except (httpx.HTTPError, ValueError) as err:
                    errors += 1
                    self.log.warning(
                        "buffer %s: %s (%d/%d)", self.metrics_url, err, errors, self.max_errors
                    )
                    if errors >= self.max_errors:
                        yield TriggerEvent(
                            {
                                "status": "error",
                                "message": f"buffer {self.metrics_url} unreachable "
                                f"{errors} times in a row: {err}",
                            }
                        )
                        return
                    await asyncio.sleep(self.poll_interval)
                    continue
                if stream_finished(stats):
                    report = stats["last_stream"]
                    summary = final_stats(report)
                    yield TriggerEvent(
                        {"status": "success" if summary["ok"] else "failed", "stats": summary}
                    )
                    return
                now = time.monotonic()
                current = progress(stats)
                if current != last_progress:
                    last_progress, last_change = current, now
                    self.log.info(
                        "transfer: %d messages in, %d out, producers ended %s/%s",
                        current[0],
                        current[1],
                        stats.get("producers", {}).get("ended"),
                        stats.get("producers", {}).get("expected"),
                    )
                elif now - last_change > self.stall_timeout:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "message": f"transfer stalled: no data moved for "
                            f"{self.stall_timeout:.0f} s ({current[0]} messages in, "
                            f"{current[1]} out)",
                        }
                    )
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            await self.cleanup()

    async def on_kill(self) -> None:
        """A user killed the watch (e.g. marked the transfer failed): stop the transfer's jobs."""
        from airflow_provider_lclstream.transfer.linked import acancel_all

        await acancel_all(self.linked_jobs)

    async def cleanup(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
