"""Submit a batch job through a job backend and wait for it, deferred or in the worker.

The job name is derived from (dag_id, run_id, task_id, map_index), so it is the same for every
try of a task instance: a retry first looks the name up and resumes watching a job that is
still pending, running or already completed, and submits again only if that job failed, was
cancelled or timed out.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import XCom, conf
from airflow.sdk import BaseOperator, BaseOperatorLink

from airflow_provider_lclstream.backends.base import JobState, JobStatus
from airflow_provider_lclstream.config.job import JobSpec, job_name_for
from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.hooks.linked_jobs import cancel_all
from airflow_provider_lclstream.links import task_log_url
from airflow_provider_lclstream.transfer.layout import JOB_ID, JOB_URL
from airflow_provider_lclstream.triggers.job_state import JobStateTrigger, raise_for_event
from airflow_provider_lclstream.triggers.settle import SETTLE_S, settle_deadline

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Context

    from airflow_provider_lclstream.backends.base import JobBackend

JOB_ID_XCOM_KEY = JOB_ID
JOB_URL_XCOM_KEY = JOB_URL
__all__ = ["JobLink", "SubmitJobOperator", "raise_for_event"]  # raise_for_event: its old home


class JobLink(BaseOperatorLink):
    """The "Job" button: the task's log in Airflow, where the job's output is streamed.

    Empty until a job was submitted. (The backend's own ``job_url``, a ``file://`` path or a
    slurmrestd URL that needs a token, is no page a browser opens: it stays in XCom ``job_url``.)
    """

    name = "Job"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if not XCom.get_value(ti_key=ti_key, key=JOB_ID_XCOM_KEY):
            return ""
        return task_log_url(ti_key)


class SubmitJobOperator(BaseOperator):
    """Run ``job`` (a :class:`JobSpec` or its dict) on the backend of connection ``conn_id``.

    ``conn_id=None`` runs it with the local backend. ``deferrable`` (default: Airflow's
    ``[operators] default_deferrable``) hands the wait to :class:`JobStateTrigger`; otherwise
    the worker polls. Pushes the job id to XCom under ``job_id`` right after submitting and
    returns it when the job completed. A failed job fails the task with its exit code, native
    state and the last ``log_tail_bytes`` of its log.
    ``resume_after`` (seconds) makes a deferred task wake up that often while the job runs.
    ``settle_s``: the trigger's first event waits this long after deferral (see
    ``triggers/settle.py``; 0 turns it off).
    """

    template_fields: tuple[str, ...] = ("job", "conn_id")
    operator_extra_links: tuple[BaseOperatorLink, ...] = (JobLink(),)
    template_fields_renderers = {"job": "json"}
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        job: JobSpec | dict[str, Any],
        conn_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        log_tail_bytes: int = 4000,
        resume_after: float | None = None,
        settle_s: float = SETTLE_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job = job.model_dump(exclude_defaults=True) if isinstance(job, JobSpec) else job
        self.conn_id = conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.log_tail_bytes = log_tail_bytes
        self.resume_after = resume_after
        self.settle_s = settle_s
        self._job_id: str | None = None
        self._context: Context | None = None

    @cached_property
    def hook(self) -> JobBackendHook:
        return JobBackendHook(self.conn_id)

    def job_spec(self, context: Context) -> JobSpec:
        """The rendered spec with its deterministic name (the user's name is its prefix)."""
        spec = JobSpec.model_validate(self.job)
        ti = context["ti"]
        name = job_name_for(
            ti.dag_id,
            ti.run_id,
            ti.task_id,
            -1 if ti.map_index is None else ti.map_index,
            prefix=spec.name,
        )
        return spec.model_copy(update={"name": name})

    # -- submit or resume ----------------------------------------------------------------------
    def _previous_job(self, backend: JobBackend, name: str) -> str | None:
        job_id = backend.find(name)
        if job_id is None:
            return None
        status = backend.state(job_id)
        if status.state in (JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT):
            self.log.info(
                "job %s from an earlier try ended %s; submitting again", job_id, status.state.value
            )
            return None
        self.log.info("resuming job %s from an earlier try (%s)", job_id, status.state.value)
        return job_id

    def _start_job(self, backend: JobBackend, spec: JobSpec, context: Context) -> str:
        """Start the job (a subclass may hand it to a job that runs already); its id."""
        job_id = backend.submit(spec)
        self.log.info("submitted job %s (%s) to %s", job_id, spec.name, backend.name)
        return job_id

    def execute(self, context: Context) -> str:
        self._context = context
        spec = self.job_spec(context)
        backend = self.hook.get_conn()
        job_id = self._previous_job(backend, spec.name or "")
        if job_id is None:
            job_id = self._start_job(backend, spec, context)
        self._job_id = job_id
        context["ti"].xcom_push(key=JOB_ID_XCOM_KEY, value=job_id)
        job_url = getattr(backend, "job_url", lambda _: None)(job_id)
        if job_url:
            context["ti"].xcom_push(key=JOB_URL_XCOM_KEY, value=job_url)
        if self.deferrable:
            self._defer(job_id, 0)
        return self._wait(backend, job_id, spec.name)

    def linked_jobs(self) -> list[list[Any]]:
        """Jobs to cancel with this one when a user kills the task (``[conn_id, job_id]``)."""
        return []

    def guard_jobs(self) -> list[list[Any]]:
        """Jobs this one needs (``[conn_id, job_id]``): when one of them ends first, the wait
        fails at once with its log and this job is cancelled (see ``JobStateTrigger``)."""
        return []

    def _guard_failed(self, event: Mapping[str, Any]) -> None:
        """A guard job ended while ours ran: cancel ours, then raise with the guard's log."""
        if self._job_id:
            self.log.warning("%s; cancelling job %s", event.get("reason"), self._job_id)
            self.hook.get_conn().cancel(self._job_id)
        raise_for_event(event)

    def _defer(self, job_id: str, log_offset: int) -> None:
        self.defer(
            trigger=JobStateTrigger(
                job_id,
                self.conn_id,
                linked_jobs=self.linked_jobs(),
                guard_jobs=self.guard_jobs(),
                not_before=settle_deadline(self.settle_s),
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                log_offset=log_offset,
                log_tail_bytes=self.log_tail_bytes,
                resume_after=self.resume_after,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Resume after the trigger fired: defer again while running, else finish or raise."""
        self._context = context
        if event.get("guard"):
            self._job_id = str(event.get("watched_job_id"))
            self._guard_failed(event)
        self._job_id = str(event.get("job_id"))
        if event.get("status") == "running":
            self.log.info("job %s is still %s", self._job_id, event.get("state"))
            self._defer(self._job_id, int(event.get("log_offset", 0)))
        job_id = raise_for_event(event)
        self.log.info("job %s completed", job_id)
        return job_id

    # -- non-deferrable ------------------------------------------------------------------------
    def _ended_guard(self, job_id: str) -> dict[str, Any] | None:
        """The non-deferred twin of ``JobStateTrigger``'s guard check: an event, or None."""
        for conn_id, guard_id in self.guard_jobs():
            backend = JobBackendHook(conn_id).get_conn()
            status = backend.state(str(guard_id))
            if status.is_final:
                tail, _ = backend.log_tail(str(guard_id), -self.log_tail_bytes)
                reason = f"job {guard_id} ended {status.state.value} while job {job_id} ran"
                return {"status": "failed", **status.to_dict(), "reason": reason, "log_tail": tail}
        return None

    def _wait(self, backend: JobBackend, job_id: str, name: str | None) -> str:
        interval, offset, last = self.poll_interval, 0, None
        while True:
            status: JobStatus = backend.state(job_id)
            text, offset = backend.log_tail(job_id, offset)
            if text:
                self.log.info("[job %s]\n%s", job_id, text.rstrip("\n"))
            if status.is_final:
                break
            guard = self._ended_guard(job_id)
            if guard is not None:
                self._guard_failed(guard)
            interval = (
                self.poll_interval
                if status.state != last
                else min(interval * 1.5, self.max_poll_interval)
            )
            last = status.state
            time.sleep(interval)
        tail = ""
        if not status.state.is_success:
            tail, _ = backend.log_tail(job_id, -self.log_tail_bytes)
        event = {"status": "success" if status.state.is_success else "failed"}
        return raise_for_event({**event, **status.to_dict(), "log_tail": tail}, name)

    # -- kill ----------------------------------------------------------------------------------
    def _recover_job_id(self) -> str | None:
        if self._job_id:
            return self._job_id
        if self._context is None:
            return None
        ti = self._context["ti"]
        value = ti.xcom_pull(task_ids=ti.task_id, key=JOB_ID_XCOM_KEY, map_indexes=ti.map_index)
        return str(value) if value else None

    def on_kill(self) -> None:
        """Cancel the job (its id comes from XCom when the operator was rebuilt)."""
        job_id = self._recover_job_id()
        if not job_id:
            self.log.info("on_kill: no job was submitted yet")
            return
        self.log.info("on_kill: cancelling job %s", job_id)
        failures: list[str] = []
        try:
            self.hook.get_conn().cancel(job_id)
        except Exception as err:  # the linked jobs must still be cancelled
            self.log.warning("on_kill: could not cancel job %s: %s", job_id, err)
            failures.append(f"job {job_id}: {type(err).__name__}: {err}")
        failures += cancel_all(self.linked_jobs())
        if failures:
            self.log.error("on_kill: %d job(s) not cancelled: %s", len(failures), failures)
