"""TransferTaskGroup: buffer, consumers, streamer, watch, wait, and a teardown that stops jobs.

A thin shell over the operators in ``operators/transfer.py``:

    start_buffer >> start_consumers >> run_streamer >> watch_transfer >> wait_consumers
    stop_jobs: teardown of start_buffer (runs whatever happened, cancels what still runs)

``start_buffer`` and ``start_consumers`` only submit their jobs (the URLs are known from the
request or ``start_buffer``'s XCom), so the streamer job follows within a task hop and all three
start together; consumers and streamer connect once the buffer listens. The streamer comes
after the consumers because ``dag.test()`` runs one task at a time, in no fixed order: a
streamer that ran first would fill the buffer with nobody reading (and the demo would measure
the buffer draining, not the stream). ``run_streamer`` watches the buffer job as a guard: a
buffer that cannot start (a port in use) or dies fails the streamer's wait at once, with the
buffer's log, and the streamer job is cancelled.

``deferrable`` (default: Airflow's ``[operators] default_deferrable``) goes to every task that
waits: ``run_streamer`` and ``wait_consumers`` defer their waits to the triggerer, or poll in the
worker. ``watch_transfer`` always defers (it needs a triggerer).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import TaskGroup, XComArg

from airflow_provider_lclstream.operators.transfer import (
    ConsumerOperator,
    LCLStreamerOperator,
    StartBufferOperator,
    StopJobsOperator,
    WaitJobsOperator,
)
from airflow_provider_lclstream.sensors.transfer import TransferSensor


def transfer_task_group(
    request: Any,
    *,
    group_id: str = "transfer",
    prefix_group_id: bool = False,
    stall_timeout: float = 300.0,
    poll_interval: float = 2.0,
    buffer_ready_timeout: float = 60.0,
    launcher: str = "mpiexec",
    deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
) -> TaskGroup:
    """Build the group in the current DAG. ``request`` is a TransferRequest dict or XComArg."""
    with TaskGroup(group_id=group_id, prefix_group_id=prefix_group_id) as group:

        def full(task_id: str) -> str:
            return f"{group_id}.{task_id}" if prefix_group_id else task_id

        buffer = StartBufferOperator(
            task_id="start_buffer",
            request=request,
            ready_timeout=buffer_ready_timeout,
            wait_ready=False,
            deferrable=deferrable,
        )
        url_timeout = buffer_ready_timeout + 30.0
        consumers = ConsumerOperator(
            task_id="start_consumers",
            request=request,
            buffer_task=full("start_buffer"),
            url_timeout=url_timeout,
            deferrable=deferrable,
        )
        streamer = LCLStreamerOperator(
            task_id="run_streamer",
            request=request,
            buffer_task=full("start_buffer"),
            url_timeout=url_timeout,
            launcher=launcher,
            poll_interval=poll_interval,
            max_poll_interval=max(poll_interval, 10.0),
            deferrable=deferrable,
        )
        watch = TransferSensor(
            task_id="watch_transfer",
            metrics_url=XComArg(buffer, key="metrics_url"),
            poll_interval=poll_interval,
            stall_timeout=stall_timeout,
            request=request,
        )
        wait = WaitJobsOperator(
            task_id="wait_consumers",
            request=request,
            jobs_from=(full("start_consumers"), "job_ids"),
            deferrable=deferrable,
        )
        stop = StopJobsOperator(
            task_id="stop_jobs",
            request=request,
            jobs_from={
                "buffer": (full("start_buffer"), "job_id"),
                "consumer": (full("start_consumers"), "job_ids"),
                "streamer": (full("run_streamer"), "job_id"),
            },
        )
        buffer >> consumers >> streamer >> watch
        watch >> wait >> stop.as_teardown(setups=buffer)
    return group
