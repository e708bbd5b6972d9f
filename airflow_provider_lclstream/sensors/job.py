"""Wait for a job that was started elsewhere (by id) to end; fail if it did not complete."""

from __future__ import annotations

import datetime as dt
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseSensorOperator

from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.triggers.job_state import JobStateTrigger, raise_for_event
from airflow_provider_lclstream.triggers.settle import settle_deadline

if TYPE_CHECKING:
    from airflow.sdk import Context


class JobSensor(BaseSensorOperator):
    """True when job ``job_id`` of connection ``conn_id`` completed; raises if it failed.

    ``deferrable`` (default: Airflow's ``[operators] default_deferrable``) hands the wait to
    :class:`JobStateTrigger` instead of poking.
    """

    template_fields = ("job_id", "conn_id")

    def __init__(
        self,
        *,
        job_id: str,
        conn_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        log_tail_bytes: int = 4000,
        max_poll_interval: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.conn_id = conn_id
        self.deferrable = deferrable
        self.log_tail_bytes = log_tail_bytes
        self.max_poll_interval = max_poll_interval

    @cached_property
    def hook(self) -> JobBackendHook:
        return JobBackendHook(self.conn_id)

    def poke(self, context: Context) -> bool:
        backend = self.hook.get_conn()
        status = backend.state(self.job_id)
        self.log.info("job %s is %s (%s)", self.job_id, status.state.value, status.native_state)
        if not status.is_final:
            return False
        tail = ""
        if not status.state.is_success:
            tail, _ = backend.log_tail(self.job_id, -self.log_tail_bytes)
        ok = "success" if status.state.is_success else "failed"
        raise_for_event({"status": ok, **status.to_dict(), "log_tail": tail})
        return True

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=JobStateTrigger(
                self.job_id,
                self.conn_id,
                poll_interval=float(self.poke_interval),
                max_poll_interval=self.max_poll_interval,
                log_tail_bytes=self.log_tail_bytes,
                not_before=settle_deadline(),
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=float(self.timeout)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        return raise_for_event(event)
