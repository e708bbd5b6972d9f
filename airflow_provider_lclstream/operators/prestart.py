"""Prestart: a run start's transfer streams from warm jobs before its DAG run exists (#19).

Between a run start and the first frame, ``lclstream_transfer`` costs a DAG run and four
tasks (``build_request``, ``start_buffer``, ``start_consumers``, ``run_streamer``) of about
0.3-0.6 s each: most of the path once the jobs are warm. So ``StartRunTransfersOperator``
(``lclstream_on_run_start``), which knows the transfer's request and run id before it triggers
the DAG run, claims the warm jobs itself (:func:`prestart_transfer`):

1. the **buffer** from a buffer pool, on the request's ports (chosen here and written into the
   request, so the transfer's own tasks use the same ones);
2. the **streamer** from a streamer pool, its config pointed at that buffer;
3. each **consumer** from a consumer pool.

Each claim uses the claim id the transfer's task would use (its job name: DAG, run id, task),
so the pools record the job under the task that will own it. The trigger's conf carries the
prestart (``conf["prestart"]``: the job ids) and the request with its ports.

The transfer's tasks then **adopt** those jobs (:func:`prestarted_job`) instead of claiming or
submitting: the same job ids go to the same XComs, so the watch, the accounting, the kill
cascade and the teardown are those of any transfer. A job is adopted only on the task's first
try and only when the pools' record (an Airflow Variable, not the conf a user may write) says
that this task's job name claimed it; anything else a conf names is ignored, and a claim that
no conf names (the trigger lost a race to another DAG run for the same run id) is cancelled
by the task, as an earlier try's is.

Best effort: a role without a serving pool, or a claim that fails, is left to the transfer's
task (claim or submit, as without prestart); without a buffer nothing is prestarted. Only a
transfer with one buffer, not pinned, no ``addr`` and ``lclstream-receive`` consumers
prestarts (what warm pools serve).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.config.job import job_name_for
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.hooks.warm_pool import (
    claim_warm,
    claimed_job,
    load_book,
    serves_now,
    top_up_pools,
)
from airflow_provider_lclstream.operators.buffer_wait import wait_buffer_placed
from airflow_provider_lclstream.transfer import layout
from airflow_provider_lclstream.transfer.jobs import (
    BufferEndpoints,
    buffer_args,
    buffer_job,
    buffer_ports,
    consumer_job,
    receive_args,
    render_config,
    streamer_job,
    streamer_num_events,
)
from airflow_provider_lclstream.transfer.request import request_from

if TYPE_CHECKING:
    from airflow.sdk import Context

PRESTART_CONF_KEY = "prestart"
"""The conf key of the prestarted jobs: ``{"buffer": id, "streamer": id | None, "consumers":
[id | None, ...]}``."""
TRANSFER_DAG_ID = "lclstream_transfer"
CAPACITY_BYTES = "1GB"
"""The buffer's capacity: ``StartBufferOperator``'s default, which the transfer group keeps."""
LAUNCHER = "mpiexec"
"""The streamer's launcher: ``TransferTaskGroup``'s default."""
PLACE_TIMEOUT_S = 10.0
"""How long the prestart waits for the claimed buffer's node (it runs already)."""
log = logging.getLogger(__name__)


def task_job_name(spec_name: str | None, dag_id: str, run_id: str, task_id: str) -> str:
    """The job name the transfer's task ``task_id`` gives its job (``operators/transfer.py``:
    ``named``), computed before the task exists: the claim id of its prestart."""
    return job_name_for(dag_id, run_id, task_id, -1, prefix=spec_name)


def why_not(request: TransferRequest) -> str | None:
    """Why this transfer cannot prestart; None when it can."""
    if request.buffers != 1:
        return f"{request.buffers} buffers (warm buffers serve one)"
    if request.buffer_pin is not None:
        return f"the buffer is pinned to {request.buffer_pin}"
    if request.addr:
        return "the buffer dials the user's own receiver (addr)"
    if request.consumer_command or request.consumer_template:
        return "a consumer command or template (warm consumers run lclstream-receive)"
    return None


def prestart_transfer(
    conf: dict[str, Any],
    run_id: str,
    *,
    dag_id: str = TRANSFER_DAG_ID,
    task_log: Any = log,
    top_up: bool = True,
) -> dict[str, Any] | None:
    """Claim the transfer's warm jobs for DAG run ``run_id`` of ``dag_id``; the conf to trigger
    it with (the request with its ports, ``prestart``), or None when nothing was claimed.
    ``top_up``: submit the pools' new standby jobs before returning (off: the caller does, off
    the run's path; ``dags/lclstream_on_run_start.py`` has a task for it)."""
    data = request_from(
        conf,
        {},
        settings.get_optional("xtc_dir"),
        templates=settings.consumer_templates(),
        admin=False,
    )
    request = TransferRequest.model_validate(data)
    reason = why_not(request)
    if reason is not None:
        task_log.info("no prestart: %s", reason)
        return None
    book = load_book()
    shape = (request.ranks, LAUNCHER)
    wanted = {
        role: serves_now(
            book,
            layout.role_conn_id(request, role),
            *shape,
            getattr(request, role).attributes,
            request.exp,
            role,  # type: ignore[arg-type]
        )  # fmt: skip
        for role in layout.ROLES
    }
    if not wanted[layout.BUFFER]:
        task_log.info("no prestart: no warm buffer pool serves this transfer")
        return None

    # 1. the buffer, on the request's ports; its node is where the others reach it
    endpoints = BufferEndpoints.pick(None, buffer_ports(request, 0))
    spec = buffer_job(request, endpoints, capacity_bytes=CAPACITY_BYTES, index=0)
    buffer_conn = layout.role_conn_id(request, layout.BUFFER)
    buffer_id, why = claim_warm(
        conn_id=buffer_conn,
        ranks=request.ranks,
        launcher=LAUNCHER,
        attributes=request.buffer.attributes,
        exp=request.exp,
        config_text=_json(buffer_args(request, endpoints, capacity_bytes=CAPACITY_BYTES, index=0)),
        num_events=None,
        claim_id=task_job_name(spec.name, dag_id, run_id, layout.START_BUFFER),
        role="buffer",
        top_up=False,
    )
    if buffer_id is None:
        task_log.info("no prestart: %s", why)
        return None
    task_log.info("prestart: %s (the buffer)", why)
    jobs: dict[str, Any] = {layout.BUFFER: buffer_id, layout.STREAMER: None, "consumers": []}
    try:
        host = wait_buffer_placed(
            JobBackendHook(buffer_conn).get_conn(), buffer_id, PLACE_TIMEOUT_S, task_log
        )
        placed = BufferEndpoints(host, *endpoints.ports)
        # 2. the streamer first: the buffer holds what it sends until the consumers connect
        if wanted[layout.STREAMER]:
            jobs[layout.STREAMER] = _claim_streamer(request, placed, dag_id, run_id, task_log)
        # 3. the consumers
        for index in range(request.consumers):
            job_id = None
            if wanted[layout.CONSUMER]:
                job_id = _claim_consumer(request, placed, index, dag_id, run_id, task_log)
            jobs["consumers"].append(job_id)
    except Exception as err:  # what was claimed is in jobs: the transfer adopts it
        task_log.warning("prestart stopped after the buffer: %s", err)
    if top_up:
        try:
            top_up_pools(settings.get_optional("logbook_url"))
        except Exception as err:  # the pools' health check tops them up later
            task_log.warning("could not top up the warm pools: %s", err)
    return {**conf, "request": data, PRESTART_CONF_KEY: jobs}


def _json(args: list[str]) -> str:
    import json

    return json.dumps(args)


def _claim_streamer(
    request: TransferRequest, buffer: BufferEndpoints, dag_id: str, run_id: str, task_log: Any
) -> str | None:
    config = request.to_streamer_config([buffer.input_url])
    spec = streamer_job(request, config, launcher=LAUNCHER, logbook_url=settings.get("logbook_url"))
    job_id, why = claim_warm(
        conn_id=layout.role_conn_id(request, layout.STREAMER),
        ranks=request.ranks,
        launcher=LAUNCHER,
        attributes=request.streamer.attributes,
        exp=request.exp,
        config_text=render_config(config),
        num_events=streamer_num_events(request),
        claim_id=task_job_name(spec.name, dag_id, run_id, layout.RUN_STREAMER),
        logbook_url=settings.get_optional("logbook_url"),
        top_up=False,
    )
    task_log.info("prestart: %s (the streamer)", why)
    return job_id


def _claim_consumer(
    request: TransferRequest,
    buffer: BufferEndpoints,
    index: int,
    dag_id: str,
    run_id: str,
    task_log: Any,
) -> str | None:
    spec = consumer_job(request, buffer.output_url, index)
    job_id, why = claim_warm(
        conn_id=layout.role_conn_id(request, layout.CONSUMER),
        ranks=request.ranks,
        launcher=LAUNCHER,
        attributes=request.consumer.attributes,
        exp=request.exp,
        config_text=_json(receive_args(request, buffer.output_url, index)),
        num_events=None,
        claim_id=task_job_name(spec.name, dag_id, run_id, f"{layout.START_CONSUMERS}-{index}"),
        role="consumer",
        top_up=False,
    )
    task_log.info("prestart: %s (consumer %d)", why, index)
    return job_id


def prestarted_job(
    context: Context, name: str, role: str, index: int | None = None, task_log: Any = log
) -> str | None:
    """The job the prestart claimed for this task's job ``name`` (role ``role``, consumer
    ``index``), to adopt; None: claim or submit as usual. Only on the task's first try, and only
    when the conf names the job the pools' record holds under ``name``."""
    ti = context["ti"]
    if int(getattr(ti, "try_number", 1) or 1) > 1:
        return None
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    record = conf.get(PRESTART_CONF_KEY)
    if not isinstance(record, dict):
        return None
    named = record.get("consumers") if role == layout.CONSUMER else record.get(role)
    if index is not None:
        named = named[index] if isinstance(named, list) and index < len(named) else None
    if not named:
        return None
    claimed = claimed_job(name)
    if claimed != str(named):
        task_log.warning(
            "the conf's prestart names %s job %s, but the warm pools record %s under %s: not "
            "adopted",
            role,
            named,
            claimed,
            name,
        )
        return None
    task_log.info("adopting %s job %s, claimed for this transfer by its run start", role, claimed)
    return claimed


__all__ = [
    "PRESTART_CONF_KEY",
    "prestart_transfer",
    "prestarted_job",
    "task_job_name",
    "why_not",
]
