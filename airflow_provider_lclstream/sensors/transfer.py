"""Wait (deferred) until a transfer's buffer finished the stream; return its final numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from airflow_provider_lclstream.exceptions import TransferFailedError
from airflow_provider_lclstream.operators.links import TransferLink
from airflow_provider_lclstream.triggers.settle import SETTLE_S, settle_deadline
from airflow_provider_lclstream.triggers.transfer import TransferTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class TransferSensor(BaseSensorOperator):
    """Defer to :class:`TransferTrigger` on ``metrics_url``; return the final stats (XCom).

    With ``request`` (the TransferRequest), killing this task cancels the transfer's jobs.

    Fails when the stream ended incomplete (with the buffer's problems), stalled for
    ``stall_timeout`` seconds, or the buffer became unreachable.
    """

    template_fields = ("metrics_url", "request")
    operator_extra_links = (TransferLink(),)

    def __init__(
        self,
        *,
        metrics_url: str | Any,
        poll_interval: float = 2.0,
        stall_timeout: float = 300.0,
        request: dict[str, Any] | Any = None,
        settle_s: float = SETTLE_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.metrics_url = metrics_url
        self.poll_interval = poll_interval
        self.stall_timeout = stall_timeout
        self.request = request
        self.settle_s = settle_s

    def execute(self, context: Context) -> None:
        linked: list[list[Any]] = []
        if self.request is not None:
            from airflow_provider_lclstream.config.transfer import TransferRequest
            from airflow_provider_lclstream.transfer.linked import linked_jobs

            linked = linked_jobs(context, TransferRequest.model_validate(self.request))
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
            stats = event["stats"]
            self.log.info(
                "transfer done: %s events, %.1f MB at %.1f MB/s in %.1f s, %s skipped, %s lost",
                stats["events"],
                stats["bytes"] / 1e6,
                stats["mb_per_s"],
                stats["duration_s"],
                stats["skipped"],
                stats["lost"],
            )
            return dict(stats)
        if event.get("status") == "failed":
            stats = event.get("stats", {})
            raise TransferFailedError(
                "transfer ended incomplete: " + ("; ".join(stats.get("problems", [])) or "unknown"),
                stats,
            )
        raise TransferFailedError(str(event.get("message", event)), {})

    def poke(self, context: Context) -> bool:  # pragma: no cover - always deferred
        return False
