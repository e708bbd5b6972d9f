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

The buffer task publishes the buffer's URLs once its job started: their host is the address of
the node the job landed on, from the job backend (the request's ``buffer_host`` only pins it).
Consumers and streamer take them from its XCom. ``LCLStreamerOperator`` guards its
wait with the buffer job: a buffer that ends first fails it at once, with the buffer's log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.config.job import JobSpec, job_name_for
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.exceptions import JobBackendError
from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.hooks.linked_jobs import cancel_all, linked_jobs, pull_ids
from airflow_provider_lclstream.hooks.warm_pool import NO_POOL, claim_warm, claimed_job
from airflow_provider_lclstream.links import TransferLink
from airflow_provider_lclstream.operators.buffer_wait import (
    BufferWaitMixin,
    wait_buffer_placed,
    wait_buffer_ready,
)
from airflow_provider_lclstream.operators.jobs import (
    StopJobsOperator,
    WaitJobsOperator,
    _ended,
    _log_text,
)
from airflow_provider_lclstream.operators.prestart import prestarted_job
from airflow_provider_lclstream.operators.submit_job import (
    JobLink,
    SubmitJobOperator,
    raise_for_event,
)
from airflow_provider_lclstream.transfer import layout
from airflow_provider_lclstream.transfer.jobs import (
    BufferEndpoints,
    buffer_args,
    buffer_job,
    buffer_of,
    buffer_ports,
    consumer_job,
    receive_args,
    render_config,
    streamer_job,
    streamer_num_events,
)
from airflow_provider_lclstream.transfer.layout import JobSources, LinkedJob, role_conn_id
from airflow_provider_lclstream.transfer.report import (
    ACCOUNTING_XCOM_KEY,
    accounting_line,
    lost_buffer_accounting,
)

BUFFER_TASK_ID = layout.START_BUFFER  # the default ``buffer_task``
CONSUMERS_TASK_ID = layout.START_CONSUMERS  # the default ``consumers_task``
WARM_XCOM_KEY = "warm_streamer"
"""XCom of ``run_streamer``: True when its streamer ran in a claimed standby job."""
WARM_BUFFER_XCOM_KEY = "warm_buffer"
"""XCom of ``start_buffer``: True when its buffer runs in a claimed standby job."""
WARM_CONSUMERS_XCOM_KEY = "warm_consumers"
"""XCom of ``start_consumers``: how many of its consumers run in claimed standby jobs."""
__all__ = [  # pull_ids and role_conn_id: their old home
    "ConsumerOperator",
    "LCLStreamerOperator",
    "StartBufferOperator",
    "StopJobsOperator",
    "WaitJobsOperator",
    "buffer_url",
    "buffer_urls",
    "pull_ids",
    "role_conn_id",
]
log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Context

    from airflow_provider_lclstream.backends.base import JobBackend


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


def claim_standby(
    backend: JobBackend,
    request: TransferRequest,
    role: str,
    attributes: dict[str, str],
    args: list[str],
    spec: JobSpec,
    task_log: Any,
    context: Context | None = None,
    index: int | None = None,
) -> str | None:
    """A standby job of a warm pool of ``role`` (``buffer``, ``consumer``) that serves this
    transfer's job, handed the program's arguments ``args`` (``hooks/warm_pool.py``); None:
    submit ``spec`` fresh (the fallback is counted in the pool).

    The job the run start prestarted for this task (``operators/prestart.py``; consumer
    ``index``) is adopted as it is. Any other standby claimed under the job's name (an earlier
    try's, or a prestart that no conf names) listens on other ports or writes other files: it
    is cancelled, as ``submit_fresh`` cancels an earlier try's job."""
    name = spec.name or ""
    if context is not None:
        adopted = prestarted_job(context, name, role, index, task_log)
        if adopted is not None:
            return adopted
    earlier = claimed_job(name)
    if earlier is not None:
        with contextlib.suppress(JobBackendError):
            if not backend.state(earlier).is_final:
                task_log.info(
                    "cancelling standby %s job %s claimed under this job's name before "
                    "(an earlier try, or a run start's prestart for another trigger)",
                    role,
                    earlier,
                )
                backend.cancel(earlier)
    job_id, why = claim_warm(
        conn_id=role_conn_id(request, role),
        ranks=request.ranks,
        launcher="mpiexec",
        attributes=attributes,
        exp=request.exp,
        config_text=json.dumps(args),
        num_events=None,
        claim_id=name,
        role=role,  # type: ignore[arg-type]  # layout.BUFFER / layout.CONSUMER
    )
    if job_id is not None:
        task_log.info("%s: the %s runs in it (no submission)", why, role)
        return job_id
    if why != NO_POOL:
        task_log.warning("no warm %s (%s); submitting a fresh job", role, why)
    return None


def buffer_url(
    context: Context, request: TransferRequest, key: str, buffer_task: str, timeout_s: float
) -> str:
    """The (first) buffer's ``input_url`` or ``output_url`` from the buffer task's XCom, once
    it published it: its host is the address of the node the buffer job landed on, which only
    the job backend knows (the buffer task may still be waiting for it)."""
    return buffer_urls(context, request, key, buffer_task, timeout_s)[0]


def buffer_urls(
    context: Context, request: TransferRequest, key: str, buffer_task: str, timeout_s: float
) -> list[str]:
    """Every buffer's ``key`` URL, buffer 0 first (:func:`buffer_url`'s wait): from the buffer
    task's ``buffers`` XCom, else its one ``key`` (a buffer task of an older version)."""
    deadline = time.monotonic() + timeout_s
    while True:
        buffers = context["ti"].xcom_pull(task_ids=buffer_task, key=layout.BUFFERS)
        if buffers:
            return [str(b[key]) for b in buffers]
        value = context["ti"].xcom_pull(task_ids=buffer_task, key=key)
        if value:
            return [str(value)]
        if time.monotonic() > deadline:
            raise JobBackendError(
                f"{buffer_task} published no {key} within {timeout_s:.0f} s (see its log)"
            )
        time.sleep(0.25)


class StartBufferOperator(BufferWaitMixin, BaseOperator):
    """Start ``lclstream-buffer`` for one transfer; return its job id and URLs.

    Returns (XCom) ``{"job_id", "input_url", "output_url", "metrics_url", ...}`` and pushes
    each of those under its own key (``buffer.output["input_url"]`` reads that key). With
    ``wait_ready`` (the default) it returns once the buffer answers (deferring after
    ``ready_grace_s`` when ``deferrable``); the transfer group turns that off, so consumers and
    streamer are submitted at once, and ``run_streamer`` watches the buffer job instead.

    The URLs' host is the address of the node the buffer job runs on, from the job backend
    (``JobStatus.nodes``, ``node_address``: SLURM's ``NodeAddr``, 127.0.0.1 for the local
    backend), pushed once the job started (``ready_timeout`` bounds that wait too). The
    request's ``buffer_host`` only pins the job to a node; a pin the backend cannot honour (no
    such node) fails the submission naming the node.
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

    def _submit(
        self, context: Context, request: TransferRequest, backend: JobBackend
    ) -> list[tuple[str, BufferEndpoints]]:
        """Submit every buffer job: ``[(job_id, endpoints without host)]``. The ids go to XCom
        as each is submitted, so the teardown finds them whatever fails next."""
        submitted: list[tuple[str, BufferEndpoints]] = []
        for index in range(request.buffers):
            endpoints = BufferEndpoints.pick(None, buffer_ports(request, index))
            job = buffer_job(request, endpoints, capacity_bytes=self.capacity_bytes, index=index)
            spec = named(job, context, f"-{index}" if request.buffers > 1 else "")
            try:
                if request.buffer_pin is not None:  # SLURM may queue a job for no such node
                    backend.node_address(request.buffer_pin)
                job_id = self._claim_warm(context, request, endpoints, spec, backend)
                if job_id is None:
                    job_id = submit_fresh(backend, spec, self.log)
            except JobBackendError as err:
                self._cancel_buffers(request, [job for job, _ in submitted])
                if request.buffer_pin is None:
                    raise
                raise JobBackendError(
                    f"the buffer job pinned to node {request.buffer_pin!r} could not be "
                    f"submitted ({request.buffer.backend} backend): {err}; check that "
                    f"{request.buffer_pin!r} is a node of that cluster (sinfo -N), or drop "
                    "buffer_host"
                ) from err
            submitted.append((job_id, endpoints))
            ids = [job for job, _ in submitted]
            context["ti"].xcom_push(key=layout.JOB_ID, value=ids[0] if len(ids) == 1 else ids)
        return submitted

    def _claim_warm(
        self,
        context: Context,
        request: TransferRequest,
        endpoints: BufferEndpoints,
        spec: JobSpec,
        backend: JobBackend,
    ) -> str | None:
        """A standby buffer of a warm pool (``role: buffer``) that serves this transfer, handed
        the buffer's arguments (:func:`claim_standby`); None: submit a fresh job. Only a
        transfer with one buffer, not pinned to a node, uses one."""
        if request.buffers != 1 or request.buffer_pin is not None:
            return None
        args = buffer_args(request, endpoints, capacity_bytes=self.capacity_bytes, index=0)
        job_id = claim_standby(
            backend, request, layout.BUFFER, request.buffer.attributes, args, spec, self.log,
            context,
        )  # fmt: skip
        if job_id is not None:
            context["ti"].xcom_push(key=WARM_BUFFER_XCOM_KEY, value=True)
        return job_id

    def _cancel_buffers(self, request: TransferRequest, job_ids: list[str]) -> None:
        """This task failed with buffer jobs submitted: cancel them. The group's teardown
        (``stop_jobs``) does not run when its setup, this task, failed."""
        if job_ids:
            self.log.warning("start_buffer failed: cancelling buffer jobs %s", job_ids)
            conn_id = role_conn_id(request, layout.BUFFER)
            cancel_all([[conn_id, job_id] for job_id in job_ids])

    def execute(self, context: Context) -> dict[str, Any]:
        request = TransferRequest.model_validate(self.request)
        backend = JobBackendHook(role_conn_id(request, layout.BUFFER)).get_conn()
        submitted = self._submit(context, request, backend)
        try:
            return self._place_and_wait(context, request, backend, submitted)
        except TaskDeferred:
            raise
        except BaseException:
            self._cancel_buffers(request, [job_id for job_id, _ in submitted])
            raise

    def _place_and_wait(
        self,
        context: Context,
        request: TransferRequest,
        backend: JobBackend,
        submitted: list[tuple[str, BufferEndpoints]],
    ) -> dict[str, Any]:
        ti = context["ti"]
        ids = [job_id for job_id, _ in submitted]
        buffers = []
        for index, (job_id, endpoints) in enumerate(submitted):
            address = wait_buffer_placed(backend, job_id, self.ready_timeout, self.log)
            placed = dataclasses.replace(endpoints, host=address)
            buffers.append({"index": index, layout.JOB_ID: job_id, **placed.urls()})
        ti.xcom_push(key=layout.BUFFERS, value=buffers)
        ti.xcom_push(key=layout.METRICS_URLS, value=[b[layout.METRICS_URL] for b in buffers])
        ti.xcom_push(key=layout.BUFFER_ADDRESS, value=buffers[0]["host"])
        for key in layout.BUFFER_URL_KEYS:  # buffer 0's, for XComArg(task, key)
            ti.xcom_push(key=key, value=buffers[0][key])
        result = {**buffers[0], layout.JOB_ID: ids[0] if len(ids) == 1 else ids}
        if request.buffers > 1:
            result[layout.BUFFERS] = buffers
        if self.wait_ready:
            conn_id = role_conn_id(request, layout.BUFFER)
            for other in buffers[1:]:  # in the worker; the first may defer
                wait_buffer_ready(
                    backend, other[layout.JOB_ID], other[layout.METRICS_URL], self.ready_timeout
                )
            first = buffers[0]
            self.wait_buffer(
                conn_id, backend, first[layout.JOB_ID], first[layout.METRICS_URL],
                self.ready_timeout,
            )  # fmt: skip
            self.log.info("buffers ready: %s", [b[layout.METRICS_URL] for b in buffers])
        return result

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after ``BufferReadyTrigger`` fired: the result (rebuilt from this task's XCom),
        or the wait's error."""
        request = TransferRequest.model_validate(self.request)
        try:
            self.check_buffer_event(event, role_conn_id(request, layout.BUFFER), self.ready_timeout)
        except BaseException:
            if "ti" in context:  # the other buffers of this task (the event's was cancelled)
                ids = pull_ids(context, context["ti"].task_id, layout.JOB_ID)
                self._cancel_buffers(request, ids)
            raise
        ti = context["ti"]
        pushed = {
            key: ti.xcom_pull(task_ids=ti.task_id, key=key, map_indexes=ti.map_index)
            for key in (layout.JOB_ID, layout.BUFFERS, *layout.BUFFER_URL_KEYS)
        }
        parts = [urlsplit(str(pushed[key])) for key in layout.BUFFER_URL_KEYS]
        endpoints = BufferEndpoints(str(parts[0].hostname), *(int(p.port or 0) for p in parts))
        result = {layout.JOB_ID: pushed[layout.JOB_ID], **endpoints.urls()}
        if len(pushed[layout.BUFFERS] or []) > 1:
            result[layout.BUFFERS] = pushed[layout.BUFFERS]
        return result


class ConsumerOperator(BufferWaitMixin, BaseOperator):
    """Start ``request.consumers`` consumer jobs on ``output_url`` (the buffer's output).

    Each runs the request's ``consumer_command`` (``$LCLSTREAM_URL`` is the output URL) or
    ``lclstream-receive`` writing HDF5 files. Returns (XCom) the list of job ids. Without
    ``output_url`` the URL comes from the XCom of ``buffer_task`` (waiting up to
    ``url_timeout`` seconds for it). With ``buffer_ready_timeout`` it then waits until the
    buffer of ``buffer_task`` answers at that address (and fails with the buffer's log if its
    job ended, or naming the address it tried once the timeout passed), deferring after
    ``ready_grace_s`` when ``deferrable``.

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
            context["ti"].xcom_push(key=layout.JOB_IDS, value=[])
            if self.buffer_ready_timeout is not None:
                self._check_buffer(context, request)
            return []
        backend = JobBackendHook(role_conn_id(request, layout.CONSUMER)).get_conn()
        urls = (
            [str(self.output_url)]
            if self.output_url
            else buffer_urls(
                context, request, layout.OUTPUT_URL, self.buffer_task, self.url_timeout
            )
        )
        job_ids = []
        warm = 0
        for index in range(request.consumers):
            url = urls[buffer_of(index, len(urls))]  # consumer i reads buffer i % buffers
            spec = named(consumer_job(request, url, index), context, f"-{index}")
            job_id = None
            if not request.consumer_command:  # lclstream-receive: a warm consumer can run it
                args = receive_args(request, url, index)
                job_id = claim_standby(
                    backend, request, layout.CONSUMER, request.consumer.attributes, args, spec,
                    self.log, context, index,
                )  # fmt: skip
                warm += job_id is not None
            job_ids.append(job_id or submit_fresh(backend, spec, self.log))
        context["ti"].xcom_push(key=layout.JOB_IDS, value=job_ids)
        if warm:
            context["ti"].xcom_push(key=WARM_CONSUMERS_XCOM_KEY, value=warm)
        if self.buffer_ready_timeout is not None:
            self._check_buffer(context, request)
        return job_ids

    def _check_buffer(self, context: Context, request: TransferRequest) -> None:
        """Wait until every buffer answers at its address (the last one's wait may defer)."""
        ti = context["ti"]
        buffers = ti.xcom_pull(task_ids=self.buffer_task, key=layout.BUFFERS) or [
            {
                layout.JOB_ID: ti.xcom_pull(task_ids=self.buffer_task, key=layout.JOB_ID),
                layout.METRICS_URL: ti.xcom_pull(task_ids=self.buffer_task, key=layout.METRICS_URL),
            }
        ]
        if not all(b[layout.JOB_ID] and b[layout.METRICS_URL] for b in buffers):
            raise JobBackendError(f"{self.buffer_task} published no buffer job id and URLs")
        conn_id = role_conn_id(request, layout.BUFFER)
        backend = JobBackendHook(conn_id).get_conn()
        timeout_s = float(self.buffer_ready_timeout or 0)
        for other in buffers[:-1]:
            wait_buffer_ready(
                backend, str(other[layout.JOB_ID]), other[layout.METRICS_URL], timeout_s
            )
        last = buffers[-1]
        self.wait_buffer(
            conn_id, backend, str(last[layout.JOB_ID]), str(last[layout.METRICS_URL]), timeout_s
        )
        self.log.info("buffers ready: metrics %s", [b[layout.METRICS_URL] for b in buffers])

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        """Resume after ``BufferReadyTrigger`` fired: the consumers' ids (from this task's
        XCom), or the wait's error."""
        request = TransferRequest.model_validate(self.request)
        timeout_s = float(self.buffer_ready_timeout or 0)
        self.check_buffer_event(event, role_conn_id(request, layout.BUFFER), timeout_s)
        ti = context["ti"]
        return pull_ids(context, ti.task_id, layout.JOB_IDS)


class LCLStreamerOperator(SubmitJobOperator):
    """Run ``mpiexec -n RANKS lclstreamer`` (or ``srun``) streaming to ``input_url``; deferrable.

    The streamer config is rendered from the request (or the user's config in it) with its
    streaming handlers pointed at ``input_url``: given, else from the XCom of ``buffer_task``
    (waiting up to ``url_timeout`` seconds for it).

    ``transfer_jobs`` (``{role: (task_id, key)}``, default: the unprefixed task ids of
    ``transfer/layout.py``) says where the transfer's other jobs are: killing this task cancels
    them too. ``TransferTaskGroup`` passes its own tasks' ids.

    When the buffer job ends while the streamer runs, the streamer job and the consumer jobs of
    ``consumers_task`` are cancelled (each process prints its counts on SIGTERM), and the task
    fails with the events produced, delivered and missing, also pushed to XCom
    ``ACCOUNTING_XCOM_KEY`` (see ``transfer/report.py``: ``lost_buffer_accounting``). The counts
    are read from the jobs' logs for up to ``report_timeout_s`` seconds.
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
        consumers_task: str = CONSUMERS_TASK_ID,
        url_timeout: float = 90.0,
        report_timeout_s: float = 60.0,
        transfer_jobs: Mapping[str, tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(job={"script": "#!/bin/bash\n"}, conn_id=conn_id, **kwargs)
        self.request = request
        self.input_url = input_url
        self.launcher = launcher
        self.buffer_task = buffer_task
        self.consumers_task = consumers_task
        self.url_timeout = url_timeout
        self.report_timeout_s = report_timeout_s
        self.transfer_jobs: JobSources = dict(transfer_jobs or layout.job_sources())

    def linked_jobs(self) -> list[LinkedJob]:
        """The transfer's buffer and consumers: a user killing the streamer stops them too."""
        if self._context is None:
            return []
        request = TransferRequest.model_validate(self.request)
        jobs = linked_jobs(self._context, request, self.transfer_jobs)
        return [job for job in jobs if job[1] != self._job_id]

    def guard_jobs(self) -> list[list[Any]]:
        """The buffer this streamer sends to: if its job ends first, the streamer cannot finish,
        so the wait fails at once with the buffer's log (a buffer that cannot bind its port)."""
        if self._context is None:
            return []
        request = TransferRequest.model_validate(self.request)
        return [
            [role_conn_id(request, layout.BUFFER), job_id]
            for job_id in pull_ids(self._context, self.buffer_task, layout.JOB_ID)
        ]

    def _guard_failed(self, event: Mapping[str, Any]) -> None:
        """The buffer ended while the streamer ran: cancel the streamer and the consumers, then
        fail with how many events were produced, delivered and are missing."""
        request = TransferRequest.model_validate(self.request)
        self._use_streamer_conn(request)
        if not self._job_id or self._context is None:
            super()._guard_failed(event)
            return
        reason = str(event.get("reason"))
        self.log.warning("%s; cancelling job %s and the consumers", reason, self._job_id)
        accounting = self._account_lost_buffer(request, self._context, self._job_id)
        accounting["reason"] = reason
        self._context["ti"].xcom_push(key=ACCOUNTING_XCOM_KEY, value=accounting)
        self.log.error("buffer lost: %s", accounting_line(accounting))
        raise_for_event({**event, "reason": f"{reason}: {accounting_line(accounting)}"})

    def _account_lost_buffer(
        self, request: TransferRequest, context: Context, job_id: str
    ) -> dict[str, Any]:
        """Cancel the streamer and consumer jobs, then read their counts from their logs until
        every rank and consumer reported, the jobs ended (read once more), or the timeout."""
        streamer = self.hook.get_conn()
        consumer = JobBackendHook(role_conn_id(request, layout.CONSUMER)).get_conn()
        consumer_ids = (
            [] if request.addr else pull_ids(context, self.consumers_task, layout.JOB_IDS)
        )
        jobs = [(streamer, job_id), *((consumer, c) for c in consumer_ids)]
        for backend, job in jobs:
            try:
                if not backend.state(job).is_final:
                    backend.cancel(job)
            except JobBackendError as err:
                self.log.warning("could not cancel job %s: %s", job, err)
        deadline = time.monotonic() + self.report_timeout_s
        ended_reads = 0
        while True:
            accounting = lost_buffer_accounting(
                request.ranks,
                _log_text(streamer, job_id) or "",
                {c: _log_text(consumer, c) for c in consumer_ids},
            )
            if accounting["exact"] or time.monotonic() > deadline:
                return accounting
            ended_reads = ended_reads + 1 if all(_ended(b, j) for b, j in jobs) else 0
            if ended_reads > 2:  # ended, and their logs read twice since: nothing more comes
                return accounting
            time.sleep(1.0)

    def _use_streamer_conn(self, request: TransferRequest) -> None:
        """Without ``conn_id``, the streamer role's connection. Every entry point sets it: a
        resumed task (``execute_complete``) or a killed one is a new operator object, and the
        local backend would not know the job (a buffer killed mid-stream left the streamer job
        running: the guard's cancel asked the local backend and failed)."""
        if self.conn_id is None:
            self.conn_id = role_conn_id(request, layout.STREAMER)
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
        urls = (
            [str(self.input_url)]
            if self.input_url
            else buffer_urls(context, request, layout.INPUT_URL, self.buffer_task, self.url_timeout)
        )
        config = request.to_streamer_config(urls)  # rank r sends to buffer r % buffers
        self._config_text = render_config(config)
        job = streamer_job(
            request, config, launcher=self.launcher, logbook_url=settings.get("logbook_url")
        )
        return named(job, context)

    def _previous_job(self, backend: JobBackend, name: str) -> str | None:
        """An earlier try's job: a standby job it claimed (by this task's job name), else the
        job of that name (``SubmitJobOperator``)."""
        claimed = claimed_job(name)
        if claimed is not None and self._context is not None:
            adopted = prestarted_job(self._context, name, layout.STREAMER, task_log=self.log)
            if adopted is not None:
                self._context["ti"].xcom_push(key=WARM_XCOM_KEY, value=True)
                return adopted
            if int(getattr(self._context["ti"], "try_number", 1) or 1) <= 1:
                # a first try has no earlier try: a prestart that no conf names claimed it
                self.log.info("cancelling standby job %s of a prestart not for this run", claimed)
                with contextlib.suppress(JobBackendError):
                    backend.cancel(claimed)
                claimed = None
        if claimed is not None:
            status = backend.state(claimed)
            if status.state not in (JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT):
                self.log.info("resuming standby job %s that an earlier try claimed", claimed)
                return claimed
        return super()._previous_job(backend, name)

    def _start_job(self, backend: JobBackend, spec: JobSpec, context: Context) -> str:
        """A warm standby job of a pool that serves this streamer (``hooks/warm_pool.py``),
        handed this run's config; else a fresh job (the fallback is counted in the pool)."""
        request = TransferRequest.model_validate(self.request)
        job_id, why = claim_warm(
            conn_id=self.conn_id,
            ranks=request.ranks,
            launcher=self.launcher,
            attributes=request.streamer.attributes,
            exp=request.exp,
            config_text=self._config_text,
            num_events=streamer_num_events(request),
            claim_id=spec.name or "",
            logbook_url=settings.get_optional("logbook_url"),
        )
        if job_id is not None:
            self.log.info("%s: the streamer runs in it (no submission)", why)
            context["ti"].xcom_push(key=WARM_XCOM_KEY, value=True)
            return job_id
        if why != NO_POOL:
            self.log.warning("no warm streamer (%s); submitting a fresh job", why)
        return super()._start_job(backend, spec, context)
