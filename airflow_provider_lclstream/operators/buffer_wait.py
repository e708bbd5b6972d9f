"""Waiting for a transfer's buffer to answer on its metrics port: in the worker, or deferred.

``wait_buffer_ready`` polls in this process; ``BufferWaitMixin`` (of ``StartBufferOperator`` and
``ConsumerOperator``) polls for at most ``ready_grace_s`` and then defers to
:class:`~airflow_provider_lclstream.triggers.buffer.BufferReadyTrigger`. Either way a buffer whose
job ends first fails the task with its log, and one that does not answer in time is cancelled.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.exceptions import JobBackendError
from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.protocol import parse_buffer_host
from airflow_provider_lclstream.triggers.buffer import BufferReadyTrigger
from airflow_provider_lclstream.triggers.settle import settle_deadline

if TYPE_CHECKING:
    from airflow_provider_lclstream.backends.base import JobBackend


def buffer_ended_error(job_id: str, state: str, exit_code: Any, tail: str) -> JobBackendError:
    return JobBackendError(
        f"buffer job {job_id} ended {state} before it answered (exit code {exit_code}):\n{tail}"
    )


def cancel_unanswered_buffer(
    backend: JobBackend, job_id: str, metrics_url: str, timeout_s: float
) -> JobBackendError:
    """Cancel a buffer job that did not answer in time; the error to raise."""
    backend.cancel(job_id)
    return JobBackendError(
        f"buffer job {job_id} did not answer on {metrics_url} within {timeout_s} s "
        "(still queued? raise ready_timeout); it was cancelled"
    )


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


PLACE_FAST_POLL_S = 5.0
"""For this long after ``wait_buffer_placed`` starts it asks the backend every 0.1 s (a run
start waits on the buffer's placement: a backoff to 2 s between polls cost up to 0.8 s of a
SLURM placement that took about 1 s); later polls back off to 2 s (0.5 s once running)."""

HOST_LINE_WAIT_S = 15.0
"""How long a running buffer job whose backend names no node may take to print its host line
(``protocol.buffer_host_line``) before 127.0.0.1 is assumed."""


def wait_buffer_placed(
    backend: JobBackend, job_id: str, timeout_s: float, log: Any, poll_s: float = 0.1
) -> str:
    """Poll the buffer job until it runs; the address of its node (``JobStatus.nodes``, then
    the backend's ``node_address``): where producers and consumers reach it.

    A job that ends first fails with its log; one not placed within ``timeout_s`` (still queued)
    is cancelled. For a backend that names no node (psik) the buffer
    tells where it runs: the host line it prints on stdout once its sockets are bound
    (``protocol.buffer_host_line``), read from the job's log; a running job whose log shows no
    such line within ``HOST_LINE_WAIT_S`` is taken to run on this host (127.0.0.1), with a
    warning.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    running_since: float | None = None
    while True:
        status = backend.state(job_id)
        if status.is_final:
            tail, _ = backend.log_tail(job_id, -4000)
            raise buffer_ended_error(job_id, status.state.value, status.exit_code, tail)
        node, source = (status.nodes[0], "its backend") if status.nodes else (None, "")
        if node is None and status.state is JobState.RUNNING:
            running_since = running_since or time.monotonic()
            node, source = _host_from_log(backend, job_id), "its log"
        if node:
            address = backend.node_address(node)
            if address in LOOPBACK_NAMES:  # may resolve to ::1 first; the buffer binds IPv4
                address = "127.0.0.1"
            log.info(
                "buffer job %s runs on %s (address %s; from %s)", job_id, node, address, source
            )
            return address
        if running_since is not None and time.monotonic() - running_since > HOST_LINE_WAIT_S:
            log.warning(
                "the %s backend does not say where buffer job %s runs, and its log shows no "
                "host line after %.0f s; using 127.0.0.1",
                getattr(backend, "name", "?"), job_id, HOST_LINE_WAIT_S,
            )  # fmt: skip
            return "127.0.0.1"
        if time.monotonic() >= deadline:
            backend.cancel(job_id)
            raise JobBackendError(
                f"buffer job {job_id} was not placed on a node within {timeout_s} s (still "
                f"{status.native_state or status.state.value}; raise the ready timeout); it was "
                "cancelled"
            )
        time.sleep(poll_s)
        if time.monotonic() - started >= PLACE_FAST_POLL_S:
            poll_s = min(poll_s * 1.5, 2.0 if running_since is None else 0.5)


def _host_from_log(backend: JobBackend, job_id: str) -> str | None:
    """The host the buffer printed in its job's log (None: not yet, or no log to read)."""
    try:
        return parse_buffer_host(backend.log_tail(job_id, -64_000)[0])
    except (JobBackendError, OSError):
        return None


def wait_buffer_ready(
    backend: JobBackend, job_id: str, metrics_url: str, timeout_s: float, *, cancel: bool = True
) -> bool:
    """Poll (in this process) until the buffer answers ``GET <metrics_url>/stats``: True.

    Fails with the buffer's log if its job ended first. Past ``timeout_s``: cancels the job and
    fails, or (``cancel=False``, a grace period before deferring) returns False.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{metrics_url}/stats", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        status = backend.state(job_id)
        if status.is_final:
            tail, _ = backend.log_tail(job_id, -4000)
            raise buffer_ended_error(job_id, status.state.value, status.exit_code, tail)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if not cancel:
        return False
    raise cancel_unanswered_buffer(backend, job_id, metrics_url, timeout_s)


class BufferWaitMixin:
    """The wait for a buffer to answer, shared by ``StartBufferOperator`` and
    ``ConsumerOperator``: poll up to ``ready_grace_s`` in the worker, then defer to
    :class:`BufferReadyTrigger` (``deferrable``) or keep polling."""

    deferrable: bool
    ready_grace_s: float
    log: Any

    def wait_buffer(
        self,
        conn_id: str | None,
        backend: JobBackend,
        job_id: str,
        metrics_url: str,
        timeout_s: float,
    ) -> None:
        """Return once the buffer answers, or defer to ``execute_complete(context, event)``.

        (``execute_complete`` finds what it returns in XCom: ``dag.test()`` in Airflow 3.3 drops
        the ``kwargs`` of a deferral.)
        """
        if not self.deferrable:
            wait_buffer_ready(backend, job_id, metrics_url, timeout_s)
            return
        deadline = time.time() + timeout_s
        grace = max(0.0, min(self.ready_grace_s, timeout_s))
        if wait_buffer_ready(backend, job_id, metrics_url, grace, cancel=False):
            return
        if time.time() >= deadline:
            raise cancel_unanswered_buffer(backend, job_id, metrics_url, timeout_s)
        self.log.info("buffer job %s not answering yet; deferring the wait", job_id)
        self.defer(  # type: ignore[attr-defined]
            trigger=BufferReadyTrigger(
                metrics_url, job_id, conn_id, deadline=deadline, not_before=settle_deadline()
            ),
            method_name="execute_complete",
        )

    def check_buffer_event(
        self, event: dict[str, Any], conn_id: str | None, timeout_s: float
    ) -> None:
        """Raise as the in-worker wait would for a ``BufferReadyTrigger`` event that is no
        success (a buffer that did not answer in time is cancelled first)."""
        status, job_id = event.get("status"), str(event.get("job_id"))
        if status == "success":
            self.log.info("buffer ready: metrics %s", event.get("metrics_url"))
            return
        if status == "failed":
            raise buffer_ended_error(
                job_id, str(event.get("state")), event.get("exit_code"), event.get("log_tail", "")
            )
        if status == "timeout":
            backend = JobBackendHook(conn_id).get_conn()
            raise cancel_unanswered_buffer(
                backend, job_id, str(event.get("metrics_url")), timeout_s
            )
        raise JobBackendError(f"lost track of buffer job {job_id}: {event.get('message', event)}")
