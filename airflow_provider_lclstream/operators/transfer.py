"""The tasks of a transfer: start the buffer, start consumers, run the streamer, stop jobs.

Each operator takes the validated ``TransferRequest`` (as a dict, usually the XCom of the
DAG's request task) and submits jobs through the job-backend hook of the role's connection.
Buffer and consumers are started and left running (their ids go to XCom); the streamer is
waited for; ``StopJobsOperator`` cancels whatever is still running at the end.

Every wait (the streamer job, the buffer answering, the consumers ending) defers to a trigger
when ``deferrable`` (default: Airflow's ``[operators] default_deferrable``), else polls in the
worker. The buffer and consumer waits first poll in the worker for at most ``ready_grace_s`` /
``grace_s`` seconds (default 5): a wait that ends that soon, the common case, costs no deferral,
which would add a triggerer round trip and the trigger's settling pause (``triggers/settle.py``).

When the request names the buffer's ports, consumers and streamer know the buffer's URLs
without asking and start together with it (ZeroMQ and NNG peers connect once it listens);
otherwise they wait for the URLs the buffer task publishes. ``LCLStreamerOperator`` guards its
wait with the buffer job: a buffer that ends first fails it at once, with the buffer's log.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseOperator

from airflow_provider_lclstream.config.job import JobSpec, job_name_for
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.exceptions import JobBackendError
from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.operators.buffer_wait import BufferWaitMixin
from airflow_provider_lclstream.operators.links import TransferLink
from airflow_provider_lclstream.operators.submit_job import JobLink, SubmitJobOperator
from airflow_provider_lclstream.transfer.jobs import (
    BufferEndpoints,
    buffer_job,
    consumer_job,
    streamer_job,
)
from airflow_provider_lclstream.triggers.job_state import JobsStateTrigger
from airflow_provider_lclstream.triggers.settle import settle_deadline

BUFFER_TASK_ID = "start_buffer"

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_lclstream.backends.base import JobBackend


def role_conn_id(request: TransferRequest, role: str) -> str | None:
    """The connection of one role: given, or ``lclstream_<backend>`` for non-local backends."""
    choice = getattr(request, role)
    if choice.conn_id:
        return str(choice.conn_id)
    return None if choice.backend == "local" else f"lclstream_{choice.backend}"


def named(spec: JobSpec, context: Context, suffix: str = "") -> JobSpec:
    """The spec with a name that is the same for every try of this task instance."""
    ti = context["ti"]
    map_index = -1 if ti.map_index is None else ti.map_index
    name = job_name_for(ti.dag_id, ti.run_id, ti.task_id + suffix, map_index, prefix=spec.name)
    return spec.model_copy(update={"name": name})


def submit_fresh(backend: JobBackend, spec: JobSpec, log: Any) -> str:
    """Submit ``spec``, first cancelling a still-running job of the same name (an earlier try)."""
    previous = backend.find(spec.name or "")
    if previous is not None and not backend.state(previous).is_final:
        log.info("cancelling job %s left running by an earlier try", previous)
        backend.cancel(previous)
    job_id = backend.submit(spec)
    log.info("submitted job %s (%s) to %s", job_id, spec.name, getattr(backend, "name", "?"))
    return job_id


def buffer_url(
    context: Context, request: TransferRequest, key: str, buffer_task: str, timeout_s: float
) -> str:
    """The buffer's ``input_url`` or ``output_url``: from the request's ports at once, else from
    the buffer task's XCom once it published it (it may still be starting the buffer)."""
    if request.buffer_ports is not None:
        return str(getattr(BufferEndpoints.pick(request.buffer_host, request.buffer_ports), key))
    deadline = time.monotonic() + timeout_s
    while True:
        value = context["ti"].xcom_pull(task_ids=buffer_task, key=key)
        if value:
            return str(value)
        if time.monotonic() > deadline:
            raise JobBackendError(
                f"{buffer_task} published no {key} within {timeout_s:.0f} s (see its log); "
                "a request with buffer_ports needs no wait"
            )
        time.sleep(0.25)


class StartBufferOperator(BufferWaitMixin, BaseOperator):
    """Start ``lclstream-buffer`` for one transfer; return its job id and URLs.

    Returns (XCom) ``{"job_id", "input_url", "output_url", "metrics_url", ...}`` and pushes
    each of those under its own key (``buffer.output["input_url"]`` reads that key). With
    ``wait_ready`` (the default) it returns once the buffer answers (deferring after
    ``ready_grace_s`` when ``deferrable``); the transfer group turns that off, so consumers and
    streamer are submitted at once, and ``run_streamer`` watches the buffer job instead.
    """

    template_fields = ("request",)
    operator_extra_links = (TransferLink(),)

    def __init__(
        self,
        *,
        request: dict[str, Any] | Any,
        ready_timeout: float = 60.0,
        capacity_bytes: str = "1GB",
        wait_ready: bool = True,
        ready_grace_s: float = 5.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.ready_timeout = ready_timeout
        self.capacity_bytes = capacity_bytes
        self.wait_ready = wait_ready
        self.ready_grace_s = ready_grace_s
        self.deferrable = deferrable

    def execute(self, context: Context) -> dict[str, Any]:
        request = TransferRequest.model_validate(self.request)
        backend = JobBackendHook(role_conn_id(request, "buffer")).get_conn()
        endpoints = BufferEndpoints.pick(request.buffer_host, request.buffer_ports)
        spec = named(buffer_job(request, endpoints, capacity_bytes=self.capacity_bytes), context)
        job_id = submit_fresh(backend, spec, self.log)
        context["ti"].xcom_push(key="job_id", value=job_id)
        urls = endpoints.urls()
        for key in ("input_url", "output_url", "metrics_url"):  # for XComArg(task, key)
            context["ti"].xcom_push(key=key, value=urls[key])
        result = {"job_id": job_id, **urls}
        if self.wait_ready:
            conn_id = role_conn_id(request, "buffer")
            self.wait_buffer(conn_id, backend, job_id, endpoints.metrics_url, self.ready_timeout)
            self.log.info("buffer ready: %s", urls)
        return result

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after ``BufferReadyTrigger`` fired: the result (rebuilt from this task's XCom),
        or the wait's error."""
        request = TransferRequest.model_validate(self.request)
        self.check_buffer_event(event, role_conn_id(request, "buffer"), self.ready_timeout)
        ti = context["ti"]
        pushed = {
            key: ti.xcom_pull(task_ids=ti.task_id, key=key, map_indexes=ti.map_index)
            for key in ("job_id", "input_url", "output_url", "metrics_url")
        }
        parts = [urlsplit(str(pushed[key])) for key in ("input_url", "output_url", "metrics_url")]
        endpoints = BufferEndpoints(str(parts[0].hostname), *(int(p.port or 0) for p in parts))
        return {"job_id": pushed["job_id"], **endpoints.urls()}


class ConsumerOperator(BufferWaitMixin, BaseOperator):
    """Start ``request.consumers`` consumer jobs on ``output_url`` (the buffer's output).

    Each runs the request's ``consumer_command`` (``$LCLSTREAM_URL`` is the output URL) or
    ``lclstream-receive`` writing HDF5 files. Returns (XCom) the list of job ids. Without
    ``output_url`` the URL comes from the request's ``buffer_ports``, else from the XCom of
    ``buffer_task`` (waiting up to ``url_timeout`` seconds for it). With
    ``buffer_ready_timeout`` it then waits until the buffer of ``buffer_task`` answers (and fails
    with the buffer's log if its job ended), deferring after ``ready_grace_s`` when
    ``deferrable``.

    A request with ``addr`` (the user's own receiver; the buffer dials it) submits no consumer
    job and returns ``[]``.
    """

    template_fields = ("request", "output_url")
    operator_extra_links = (TransferLink(),)

    def __init__(
        self,
        *,
        request: dict[str, Any] | Any,
        output_url: str | Any | None = None,
        buffer_task: str = BUFFER_TASK_ID,
        url_timeout: float = 90.0,
        buffer_ready_timeout: float | None = None,
        ready_grace_s: float = 5.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.output_url = output_url
        self.buffer_task = buffer_task
        self.url_timeout = url_timeout
        self.buffer_ready_timeout = buffer_ready_timeout
        self.ready_grace_s = ready_grace_s
        self.deferrable = deferrable

    def execute(self, context: Context) -> list[str]:
        request = TransferRequest.model_validate(self.request)
        if request.addr:
            self.log.info(
                "addr %s: the buffer pushes to your own receiver there; no consumer job",
                request.addr,
            )
            context["ti"].xcom_push(key="job_ids", value=[])
            if self.buffer_ready_timeout is not None:
                self._check_buffer(context, request)
            return []
        backend = JobBackendHook(role_conn_id(request, "consumer")).get_conn()
        url = self.output_url or buffer_url(
            context, request, "output_url", self.buffer_task, self.url_timeout
        )
        job_ids = []
        for index in range(request.consumers):
            spec = named(consumer_job(request, str(url), index), context, f"-{index}")
            job_ids.append(submit_fresh(backend, spec, self.log))
        context["ti"].xcom_push(key="job_ids", value=job_ids)
        if self.buffer_ready_timeout is not None:
            self._check_buffer(context, request)
        return job_ids

    def _check_buffer(self, context: Context, request: TransferRequest) -> None:
        ti = context["ti"]
        job_id = ti.xcom_pull(task_ids=self.buffer_task, key="job_id")
        metrics_url = ti.xcom_pull(task_ids=self.buffer_task, key="metrics_url")
        if not job_id or not metrics_url:
            raise JobBackendError(f"{self.buffer_task} published no buffer job id and URLs")
        conn_id = role_conn_id(request, "buffer")
        self.wait_buffer(
            conn_id,
            JobBackendHook(conn_id).get_conn(),
            str(job_id),
            str(metrics_url),
            float(self.buffer_ready_timeout or 0),
        )
        self.log.info("buffer ready: metrics %s", metrics_url)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        """Resume after ``BufferReadyTrigger`` fired: the consumers' ids (from this task's
        XCom), or the wait's error."""
        request = TransferRequest.model_validate(self.request)
        timeout_s = float(self.buffer_ready_timeout or 0)
        self.check_buffer_event(event, role_conn_id(request, "buffer"), timeout_s)
        ti = context["ti"]
        return pull_ids(context, ti.task_id, "job_ids")


class LCLStreamerOperator(SubmitJobOperator):
    """Run ``mpiexec -n RANKS lclstreamer`` (or ``srun``) streaming to ``input_url``; deferrable.

    The streamer config is rendered from the request (or the user's config in it) with its
    streaming handlers pointed at ``input_url``: given, or from the request's ``buffer_ports``,
    else from the XCom of ``buffer_task`` (waiting up to ``url_timeout`` seconds for it).
    """

    template_fields: tuple[str, ...] = ("request", "input_url", "conn_id")
    operator_extra_links = (JobLink(), TransferLink())

    def __init__(
        self,
        *,
        request: dict[str, Any] | Any,
        input_url: str | Any | None = None,
        launcher: str = "mpiexec",
        conn_id: str | None = None,
        buffer_task: str = BUFFER_TASK_ID,
        url_timeout: float = 90.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(job={"script": "#!/bin/bash\n"}, conn_id=conn_id, **kwargs)
        self.request = request
        self.input_url = input_url
        self.launcher = launcher
        self.buffer_task = buffer_task
        self.url_timeout = url_timeout

    def linked_jobs(self) -> list[list[Any]]:
        """The transfer's buffer and consumers: a user killing the streamer stops them too."""
        if self._context is None:
            return []
        from airflow_provider_lclstream.transfer.linked import linked_jobs

        request = TransferRequest.model_validate(self.request)
        return [job for job in linked_jobs(self._context, request) if job[1] != self._job_id]

    def guard_jobs(self) -> list[list[Any]]:
        """The buffer this streamer sends to: if its job ends first, the streamer cannot finish,
        so the wait fails at once with the buffer's log (a buffer that cannot bind its port)."""
        if self._context is None:
            return []
        request = TransferRequest.model_validate(self.request)
        return [
            [role_conn_id(request, "buffer"), job_id]
            for job_id in pull_ids(self._context, self.buffer_task, "job_id")
        ]

    def _use_streamer_conn(self, request: TransferRequest) -> None:
        """Without ``conn_id``, the streamer role's connection. Every entry point sets it: a
        resumed task (``execute_complete``) or a killed one is a new operator object, and the
        local backend would not know the job (a buffer killed mid-stream left the streamer job
        running: the guard's cancel asked the local backend and failed)."""
        if self.conn_id is None:
            self.conn_id = role_conn_id(request, "streamer")
            self.__dict__.pop("hook", None)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        self._use_streamer_conn(TransferRequest.model_validate(self.request))
        return super().execute_complete(context, event)

    def on_kill(self) -> None:
        self._use_streamer_conn(TransferRequest.model_validate(self.request))
        super().on_kill()

    def job_spec(self, context: Context) -> JobSpec:
        request = TransferRequest.model_validate(self.request)
        self._use_streamer_conn(request)
        url = self.input_url or buffer_url(
            context, request, "input_url", self.buffer_task, self.url_timeout
        )
        config = request.to_streamer_config(str(url))
        job = streamer_job(
            request, config, launcher=self.launcher, logbook_url=settings.get("logbook_url")
        )
        return named(job, context)


def pull_ids(context: Context, task_id: str, key: str) -> list[str]:
    value = context["ti"].xcom_pull(task_ids=task_id, key=key)
    if not value:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


class WaitJobsOperator(BaseOperator):
    """Wait until every job of XCom ``(task_id, key)`` ended; fail with the log tail of any that
    did not complete (consumers exit once the buffer's end-of-stream record reached them).

    Polls in the worker for at most ``grace_s`` seconds, then (``deferrable``) hands the rest of
    the wait to :class:`JobsStateTrigger`; not deferrable, it polls until ``timeout_s``.
    """

    template_fields = ("request",)
    operator_extra_links = (TransferLink(),)

    def __init__(
        self,
        *,
        request: dict[str, Any] | Any,
        jobs_from: tuple[str, str],
        role: str = "consumer",
        timeout_s: float = 600.0,
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        grace_s: float = 5.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.jobs_from = jobs_from
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
            from airflow_provider_lclstream.transfer.linked import cancel_all, linked_jobs

            cancel_all(linked_jobs(self._context, TransferRequest.model_validate(self.request)))

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
        from airflow_provider_lclstream.transfer.linked import linked_jobs

        self.log.info("%s jobs %s still running; deferring the wait", self.role, pending)
        self.defer(  # the trigger watches every job: dag.test() drops a deferral's kwargs
            trigger=JobsStateTrigger(
                [*done, *pending],
                conn_id,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                deadline=deadline,
                linked_jobs=linked_jobs(context, request),
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
    of the XCom holding its job id(s); a missing XCom (the task never ran) is skipped.
    """

    template_fields = ("request",)
    operator_extra_links = (TransferLink(),)

    def __init__(
        self,
        *,
        request: dict[str, Any] | Any,
        jobs_from: dict[str, tuple[str, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.jobs_from = jobs_from

    def execute(self, context: Context) -> dict[str, list[str]]:
        request = TransferRequest.model_validate(self.request)
        cancelled: dict[str, list[str]] = {}
        for role, (task_id, key) in self.jobs_from.items():
            ids = pull_ids(context, task_id, key)
            if not ids:
                continue
            backend = JobBackendHook(role_conn_id(request, role)).get_conn()
            for job_id in ids:
                try:
                    if not backend.state(job_id).is_final:
                        backend.cancel(job_id)
                        cancelled.setdefault(role, []).append(job_id)
                except JobBackendError as err:
                    self.log.warning("could not stop %s job %s: %s", role, job_id, err)
        self.log.info("stopped: %s", cancelled or "nothing was left running")
        return cancelled
