"""``WarmStreamerPoolOperator``: keep a pool of standby streamer (or buffer) jobs ready (#19).

Run it at shift start and then every few minutes (``dags/lclstream_warm_pool.py``): each run
is the pool's health check (``transfer/warm_pool.py``: ``maintain``). A transfer whose streamer
matches the pool (connection, ranks, launcher, job attributes, instrument) then claims a
standby job instead of submitting one (``LCLStreamerOperator``); with ``role="buffer"`` a
transfer with one unpinned buffer on that connection claims a standby buffer
(``StartBufferOperator``), with ``role="consumer"`` a standby ``lclstream-receive`` for each of
its default consumers (``ConsumerOperator``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.hooks.warm_pool import maintain_pool, pool_summary
from airflow_provider_lclstream.transfer.layout import backend_conn_id
from airflow_provider_lclstream.transfer.warm_pool import PoolSpec

if TYPE_CHECKING:
    from airflow.sdk import Context


class WarmStreamerPoolOperator(BaseOperator):
    """Create or update the warm pool ``pool_name`` (not an Airflow pool) and check its jobs:
    ended and silent jobs are dropped (counted), and standby jobs are submitted up to ``size``
    (0 empties the pool).
    The jobs run on connection ``conn_id``, else on ``backend``'s default connection
    (``lclstream_<backend>``; ``local`` or neither: the local backend), as a transfer's
    streamer with that backend would.
    ``wait_ready_s``: wait that long for every job to print its control address. ``role``:
    ``streamer`` (``lclstreamer --standby`` jobs of ``ranks`` ranks), ``buffer``
    (``lclstream-buffer --standby`` jobs) or ``consumer`` (``lclstream-receive --standby``).
    Returns the pool's summary (jobs, counters, recent events)."""

    template_fields = (
        "pool_name", "conn_id", "backend", "size", "ranks", "instrument", "idle_timeout_s",
        "wait_ready_s", "role",
    )  # fmt: skip
    ui_color = "#fdebd0"

    def __init__(
        self,
        *,
        pool_name: str,
        conn_id: str | None = None,
        backend: str | None = None,
        ranks: int = 2,
        launcher: str = "mpiexec",
        size: int = 1,
        idle_timeout_s: float = 600.0,
        instrument: str | None = None,
        attributes: dict[str, str] | None = None,
        duration_min: int = 60,
        ping_timeout_s: float = 2.0,
        wait_ready_s: float = 0.0,
        role: str = "streamer",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.role = role
        self.pool_name = pool_name
        self.conn_id = conn_id
        self.backend = backend
        self.ranks = ranks
        self.launcher = launcher
        self.size = size
        self.idle_timeout_s = idle_timeout_s
        self.instrument = instrument
        self.attributes = dict(attributes or {})
        self.duration_min = duration_min
        self.ping_timeout_s = ping_timeout_s
        self.wait_ready_s = wait_ready_s

    def execute(self, context: Context) -> dict[str, Any]:
        conn_id = self.conn_id or None
        if conn_id is None and self.backend and self.backend != "local":
            conn_id = backend_conn_id(self.backend)
        spec = PoolSpec(
            name=self.pool_name,
            role=self.role,  # type: ignore[arg-type]  # validated by PoolSpec
            conn_id=conn_id,
            ranks=int(self.ranks),
            launcher=self.launcher,  # type: ignore[arg-type]  # validated by PoolSpec
            size=int(self.size),
            idle_timeout_s=float(self.idle_timeout_s),
            instrument=self.instrument or None,
            attributes=self.attributes,
            duration_min=self.duration_min,
        )
        state = maintain_pool(
            spec,
            ping_timeout_s=self.ping_timeout_s,
            wait_ready_s=float(self.wait_ready_s),
            logbook_url=settings.get_optional("logbook_url"),
        )
        summary = pool_summary(state)
        self.log.info(
            "warm pool %s: %d job(s), %d ready; counters %s",
            spec.name, len(state.jobs), summary["ready"], summary["counters"],
        )  # fmt: skip
        for event in state.events[-10:]:
            self.log.info("  %s", event)
        return summary


__all__ = ["WarmStreamerPoolOperator"]
