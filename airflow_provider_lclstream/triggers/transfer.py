"""Watch a transfer through its buffers' ``/stats`` until every buffer's stream ended.

A transfer with several buffers (``buffers`` in the request) is watched through all of them:
the event's stats sum theirs (``transfer.stats.combine_summaries``), with each one's own under
``stats.buffers``; progress (and the stall timeout) counts the messages of all of them.

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

from airflow_provider_lclstream.hooks.linked_jobs import acancel_all
from airflow_provider_lclstream.transfer.stats import (
    BufferStats,
    TransferSummary,
    combine_summaries,
    parse_stats,
    progress,
    stream_finished,
    summarize_report,
)
from airflow_provider_lclstream.triggers.settle import settled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class TransferTrigger(BaseTrigger):
    """Poll ``{metrics_url}/stats`` (each of them, given a list) every ``poll_interval`` s.

    ``linked_jobs`` (``[conn_id, job_id]`` pairs) are cancelled when a user kills the task.
    """

    def __init__(
        self,
        metrics_url: str | list[str],
        *,
        poll_interval: float = 2.0,
        stall_timeout: float = 300.0,
        max_errors: int = 10,
        linked_jobs: list[list[Any]] | None = None,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        urls = [metrics_url] if isinstance(metrics_url, str) else list(metrics_url)
        self.metrics_urls = [str(url).rstrip("/") for url in urls]
        self.metrics_url: str | list[str] = (
            self.metrics_urls[0] if isinstance(metrics_url, str) else self.metrics_urls
        )
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
        finished: dict[str, TransferSummary] = {}  # url -> its final numbers
        try:
            while True:
                polled: list[BufferStats] = []
                for url in self.metrics_urls:
                    try:
                        response = await self._connect().get(f"{url}/stats")
                        response.raise_for_status()
                        polled.append(parse_stats(response.json(), f"{url}/stats"))
                        errors = 0
                    except (httpx.HTTPError, ValueError) as err:
                        errors += 1
                        self.log.warning("buffer %s: %s (%d/%d)", url, err, errors, self.max_errors)
                        if errors >= self.max_errors:
                            yield TriggerEvent(
                                {
                                    "status": "error",
                                    "message": f"buffer {url} unreachable "
                                    f"{errors} times in a row: {err}",
                                }
                            )
                            return
                        break
                if len(polled) < len(self.metrics_urls):
                    await asyncio.sleep(self.poll_interval)
                    continue
                for url, stats in zip(self.metrics_urls, polled, strict=True):
                    report = stats.last_stream
                    if url not in finished and report is not None and stream_finished(stats):
                        finished[url] = summarize_report(report)
                if len(finished) == len(self.metrics_urls):
                    total = combine_summaries([finished[url] for url in self.metrics_urls])
                    summary = total.model_dump(mode="json")
                    yield TriggerEvent(
                        {"status": "success" if summary["ok"] else "failed", "stats": summary}
                    )
                    return
                now = time.monotonic()
                each = [progress(stats) for stats in polled]
                current = (sum(p[0] for p in each), sum(p[1] for p in each))
                if current != last_progress:
                    last_progress, last_change = current, now
                    self.log.info(
                        "transfer: %d messages in, %d out, producers ended %s/%s",
                        current[0],
                        current[1],
                        sum(stats.producers.ended for stats in polled),
                        sum(stats.producers.expected or 0 for stats in polled),
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
        await acancel_all(self.linked_jobs)

    async def cleanup(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
