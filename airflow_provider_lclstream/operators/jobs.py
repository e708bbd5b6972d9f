"""Waiting for and stopping a transfer's jobs: ``WaitJobsOperator`` and ``StopJobsOperator``.

Both read job ids from XCom (``layout.ROLE_JOBS``, the same place the kill cascade reads them)
and act through each role's job-backend hook. ``StopJobsOperator`` is the group's teardown: it
tries every job whatever fails and reports every failure at the end.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseOperator

from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.exceptions import JobBackendError, JobNotFoundError, StopJobsError
from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.hooks.linked_jobs import cancel_all, linked_jobs, pull_ids
from airflow_provider_lclstream.links import TransferLink
from airflow_provider_lclstream.transfer import layout
from airflow_provider_lclstream.transfer.layout import JobSources, role_conn_id
from airflow_provider_lclstream.triggers.job_state import JobsStateTrigger
from airflow_provider_lclstream.triggers.settle import settle_deadline

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Context

    from airflow_provider_lclstream.backends.base import JobBackend


def _log_text(backend: JobBackend, job_id: str, tail_bytes: int = 256_000) -> str | None:
    """The last ``tail_bytes`` of a job's log, or None when it cannot be read."""
    try:
        return backend.log_tail(job_id, -tail_bytes)[0]
    except (JobBackendError, OSError) as err:
        log.warning("cannot read the log of job %s: %s", job_id, err)
        return None


def _ended(backend: JobBackend, job_id: str) -> bool:
    try:
        return backend.state(job_id).is_final
    except JobBackendError:
        return True  # gone: nothing more will come from it


class WaitJobsOperator(BaseOperator):
    """Wait until every job of XCom ``(task_id, key)`` ended; fail with the log tail of any that
    did not complete (consumers exit once the buffer's end-of-stream record reached them).

    Polls in the worker for at most ``grace_s`` seconds, then (``deferrable``) hands the rest of
    the wait to :class:`JobsStateTrigger`; not deferrable, it polls until ``timeout_s``.
    Killing it cancels the jobs of ``transfer_jobs`` (as :class:`LCLStreamerOperator`'s).
    """

    template_fields = ("request",)
    operator_extra_links = (TransferLink(),)

    def __init__(
        self,
        *,
        request: dict[str, Any] | Any,
        jobs_from: tuple[str, str],
        role: str = layout.CONSUMER,
        timeout_s: float = 600.0,
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        grace_s: float = 5.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        transfer_jobs: Mapping[str, tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.jobs_from = jobs_from
        self.transfer_jobs: JobSources = dict(transfer_jobs or layout.job_sources())
        self.role = role
        self.timeout_s = timeout_s
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.grace_s = grace_s
        self.deferrable = deferrable
        self._context: Context | None = None

    def on_kill(self) -> None:
        """A user killed the transfer while it finished: stop every job of it."""
        if self._context is not None:
            request = TransferRequest.model_validate(self.request)
            failures = cancel_all(linked_jobs(self._context, request, self.transfer_jobs))
            if failures:
                self.log.error("on_kill: %d job(s) not cancelled: %s", len(failures), failures)

    def _failed(self, job_id: str, state: str, exit_code: Any, tail: str) -> JobBackendError:
        return JobBackendError(
            f"{self.role} job {job_id} ended {state} (exit code {exit_code}):\n{tail}"
        )

    def _timed_out(self, pending: list[str]) -> JobBackendError:
        return JobBackendError(f"{self.role} jobs {pending} still running after {self.timeout_s} s")

    def execute(self, context: Context) -> dict[str, Any]:
        self._context = context
        request = TransferRequest.model_validate(self.request)
        conn_id = role_conn_id(request, self.role)
        backend = JobBackendHook(conn_id).get_conn()
        pending = pull_ids(context, *self.jobs_from)
        done: dict[str, Any] = {}
        deadline = time.time() + self.timeout_s
        poll_until = deadline if not self.deferrable else time.time() + self.grace_s
        while pending:
            for job_id in list(pending):
                status = backend.state(job_id)
                if status.is_final:
                    pending.remove(job_id)
                    done[job_id] = status.to_dict()
                    tail, _ = backend.log_tail(job_id, -2000)
                    self.log.info(
                        "%s job %s ended %s\n%s", self.role, job_id, status.state.value, tail
                    )
                    if not status.state.is_success:
                        raise self._failed(job_id, status.state.value, status.exit_code, tail)
            if pending and time.time() > deadline:
                raise self._timed_out(pending)
            if pending and time.time() >= poll_until:
                break
            if pending:
                time.sleep(self.poll_interval)
        if not pending:
            return done
        self.log.info("%s jobs %s still running; deferring the wait", self.role, pending)
        self.defer(  # the trigger watches every job: dag.test() drops a deferral's kwargs
            trigger=JobsStateTrigger(
                [*done, *pending],
                conn_id,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                deadline=deadline,
                linked_jobs=linked_jobs(context, request, self.transfer_jobs),
                not_before=settle_deadline(),
            ),
            method_name="execute_complete",
        )
        return done  # not reached: defer() raises

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after ``JobsStateTrigger`` fired: every job's state, or the wait's error."""
        self._context = context
        done = dict(event.get("jobs", {}))
        status = event.get("status")
        for job_id, job in event.get("jobs", {}).items():
            self.log.info("%s job %s ended %s", self.role, job_id, job.get("state"))
        if status == "success":
            return done
        if status == "failed":
            raise self._failed(
                str(event.get("job_id")),
                str(event.get("state")),
                event.get("exit_code"),
                event.get("log_tail", ""),
            )
        if status == "timeout":
            raise self._timed_out(list(event.get("pending", [])))
        raise JobBackendError(f"lost track of {self.role} jobs: {event.get('message', event)}")


class StopJobsOperator(BaseOperator):
    """Teardown: cancel the transfer's jobs that are still running (buffer, consumers, streamer).

    ``jobs_from`` maps a role (``buffer``, ``consumer``, ``streamer``) to the ``(task_id, key)``
    of the XCom holding its job id(s) (default: the unprefixed task ids of
    ``transfer/layout.py``); a missing XCom (the task never ran) is skipped.

    It tries every job, whatever fails on the way (a backend that cannot be reached, a cancel
    refused), and then fails with :class:`StopJobsError` naming every job it could not stop: a
    job left running holds its nodes until its walltime. A job its backend no longer knows is
    gone already and no failure.
    """

    template_fields = ("request",)
    operator_extra_links = (TransferLink(),)

    def __init__(
        self,
        *,
        request: dict[str, Any] | Any,
        jobs_from: Mapping[str, tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.jobs_from: JobSources = dict(jobs_from or layout.job_sources())

    def execute(self, context: Context) -> dict[str, list[str]]:
        request = TransferRequest.model_validate(self.request)
        cancelled: dict[str, list[str]] = {}
        failures: list[str] = []
        for role, (task_id, key) in self.jobs_from.items():
            ids = pull_ids(context, task_id, key)
            if not ids:
                continue
            try:
                backend = JobBackendHook(role_conn_id(request, role)).get_conn()
            except Exception as err:
                failures += [f"{role} job {job_id}: no backend: {err}" for job_id in ids]
                self.log.warning("cannot reach the %s backend: %s", role, err)
                continue
            for job_id in ids:
                try:
                    if not backend.state(job_id).is_final:
                        backend.cancel(job_id)
                        cancelled.setdefault(role, []).append(job_id)
                except JobNotFoundError as err:
                    self.log.info("%s job %s is gone already: %s", role, job_id, err)
                except Exception as err:
                    failures.append(f"{role} job {job_id}: {type(err).__name__}: {err}")
                    self.log.warning("could not stop %s job %s: %s", role, job_id, err)
        self.log.info("stopped: %s", cancelled or "nothing was left running")
        if failures:
            raise StopJobsError(failures, cancelled)
        return cancelled
