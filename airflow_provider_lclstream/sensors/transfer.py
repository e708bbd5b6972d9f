"""Wait (deferred) until a transfer's buffer finished the stream; return its final numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.exceptions import TransferFailedError
from airflow_provider_lclstream.hooks.linked_jobs import linked_jobs
from airflow_provider_lclstream.links import TransferLink
from airflow_provider_lclstream.transfer import layout
from airflow_provider_lclstream.transfer.stats import TransferSummary
from airflow_provider_lclstream.triggers.settle import SETTLE_S, settle_deadline
from airflow_provider_lclstream.triggers.transfer import TransferTrigger

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Context


class TransferSensor(BaseSensorOperator):
    """Defer to :class:`TransferTrigger` on ``metrics_url``; return the final stats (XCom).

    ``metrics_url`` may be a list (a transfer with several buffers): the stats then sum every
    buffer's, and ``buffers`` holds each one's.

    With ``request`` (the TransferRequest), killing this task cancels the transfer's jobs,
    found in XCom at ``transfer_jobs`` (``{role: (task_id, key)}``, default: the unprefixed
    task ids of ``transfer/layout.py``; ``TransferTaskGroup`` passes its own tasks' ids).

    Fails when the stream ended incomplete (with the buffer's problems), stalled for
    ``stall_timeout`` seconds, or the buffer became unreachable.
    """

    template_fields = ("metrics_url", "request")
    operator_extra_links = (TransferLink(),)

    def __init__(
        self,
        *,
        metrics_url: str | list[str] | Any,
        poll_interval: float = 2.0,
        stall_timeout: float = 300.0,
        request: dict[str, Any] | Any = None,
        settle_s: float = SETTLE_S,
        transfer_jobs: Mapping[str, tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.metrics_url = metrics_url
        self.poll_interval = poll_interval
        self.stall_timeout = stall_timeout
        self.request = request
        self.settle_s = settle_s
        self.transfer_jobs: layout.JobSources = dict(transfer_jobs or layout.job_sources())

    def execute(self, context: Context) -> None:
        linked: list[list[Any]] = []
        if self.request is not None:
            request = TransferRequest.model_validate(self.request)
            linked = linked_jobs(context, request, self.transfer_jobs)
        self.defer(
            trigger=TransferTrigger(
                self.metrics_url,
                poll_interval=self.poll_interval,
                stall_timeout=self.stall_timeout,
                linked_jobs=linked,
                not_before=settle_deadline(self.settle_s),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") == "success":
            summary = TransferSummary.model_validate(event["stats"])
            self.log.info(
                "transfer done: %s events, %.1f MB at %.1f MB/s in %.1f s, %s skipped, %s lost",
                summary.events,
                summary.bytes / 1e6,
                summary.mb_per_s,
                summary.duration_s,
                summary.skipped,
                summary.lost,
            )
            for index, each in enumerate(summary.buffers):
                self.log.info(
                    "buffer %d: %s events from %s/%s ranks, %.1f MB at %.1f MB/s, %s lost",
                    index,
                    each.events,
                    each.producers_ended,
                    each.producers_expected,
                    each.bytes / 1e6,
                    each.mb_per_s,
                    each.lost,
                )
            return summary.model_dump(mode="json")
        if event.get("status") == "failed":
            stats = event.get("stats") or {}
            problems = TransferSummary.model_validate(stats).problems if stats else []
            raise TransferFailedError(
                "transfer ended incomplete: " + ("; ".join(problems) or "unknown"), stats
            )
        raise TransferFailedError(str(event.get("message", event)), {})

    def poke(self, context: Context) -> bool:  # pragma: no cover - always deferred
        return False
