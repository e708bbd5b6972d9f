"""TransferTaskGroup: buffer, consumers, streamer, watch, wait, and a teardown that stops jobs.

A thin shell over the operators in ``operators/transfer.py``:

    start_buffer >> start_consumers >> run_streamer >> watch_transfer >> wait_consumers
    stop_jobs: teardown of start_buffer (runs whatever happened, cancels what still runs)

``start_buffer`` submits the buffer job and publishes its URLs as soon as the job backend says
which node it landed on (their host is that node's address; the request's ``buffer_host`` only
pins it). ``start_consumers`` submits the consumers on them and then waits (up to
``buffer_ready_timeout``) until the buffer answers there, failing with the address it tried;
the streamer job follows within a task hop. The streamer comes
after the consumers because ``dag.test()`` runs one task at a time, in no fixed order: a
streamer that ran first would fill the buffer with nobody reading (and the demo would measure
the buffer draining, not the stream). ``run_streamer`` watches the buffer job as a guard: a
buffer that cannot start (a port in use) or dies fails the streamer's wait at once, with the
buffer's log, and the streamer job is cancelled.

``deferrable`` (default: Airflow's ``[operators] default_deferrable``) goes to every task that
waits: ``run_streamer`` and ``wait_consumers`` defer their waits to the triggerer, or poll in the
worker. ``watch_transfer`` always defers (it needs a triggerer).

The group holds its tasks (``group.start_buffer``, ``group.run_streamer``, ...) and hands each
task the real ids of the others, read from the task objects: with ``prefix_group_id`` they are
``<group_id>.<task>``, and every XCom pull and kill cascade uses them. Task ids, XCom keys and
roles come from :mod:`airflow_provider_lclstream.transfer.layout`.
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
from airflow_provider_lclstream.transfer import layout

_DEFERRABLE = conf.getboolean("operators", "default_deferrable", fallback=False)


class TransferTaskGroup(TaskGroup):
    """The tasks of one transfer, built in the current DAG (``request``: a TransferRequest dict
    or XComArg). Ask the group for its tasks rather than rebuilding their ids."""

    def __init__(
        self,
        request: Any,
        *,
        group_id: str = "transfer",
        prefix_group_id: bool = False,
        stall_timeout: float = 300.0,
        poll_interval: float = 2.0,
        buffer_ready_timeout: float = 60.0,
        launcher: str = "mpiexec",
        deferrable: bool = _DEFERRABLE,
        **kwargs: Any,
    ) -> None:
        super().__init__(group_id=group_id, prefix_group_id=prefix_group_id, **kwargs)
        with self:
            buffer = StartBufferOperator(
                task_id=layout.START_BUFFER,
                request=request,
                ready_timeout=buffer_ready_timeout,
                wait_ready=False,
                deferrable=deferrable,
            )
            url_timeout = buffer_ready_timeout + 30.0
            consumers = ConsumerOperator(
                task_id=layout.START_CONSUMERS,
                request=request,
                buffer_task=buffer.task_id,
                url_timeout=url_timeout,
                buffer_ready_timeout=buffer_ready_timeout,
                deferrable=deferrable,
            )
            streamer = LCLStreamerOperator(
                task_id=layout.RUN_STREAMER,
                request=request,
                buffer_task=buffer.task_id,
                consumers_task=consumers.task_id,
                url_timeout=url_timeout,
                launcher=launcher,
                poll_interval=poll_interval,
                max_poll_interval=max(poll_interval, 10.0),
                deferrable=deferrable,
            )
            # where each role's job ids are in XCom, from the tasks themselves (prefixed or not)
            jobs = {
                layout.BUFFER: (buffer.task_id, layout.JOB_ID),
                layout.CONSUMER: (consumers.task_id, layout.JOB_IDS),
                layout.STREAMER: (streamer.task_id, layout.JOB_ID),
            }
            streamer.transfer_jobs = dict(jobs)
            watch = TransferSensor(
                task_id=layout.WATCH_TRANSFER,
                metrics_url=XComArg(buffer, key=layout.METRICS_URLS),  # every buffer's
                poll_interval=poll_interval,
                stall_timeout=stall_timeout,
                request=request,
                transfer_jobs=jobs,
            )
            wait = WaitJobsOperator(
                task_id=layout.WAIT_CONSUMERS,
                request=request,
                jobs_from=jobs[layout.CONSUMER],
                transfer_jobs=jobs,
                deferrable=deferrable,
            )
            stop = StopJobsOperator(task_id=layout.STOP_JOBS, request=request, jobs_from=jobs)
            buffer >> consumers >> streamer >> watch
            watch >> wait >> stop.as_teardown(setups=buffer)

    def _task(self, task_id: str) -> Any:
        return self.children[self.child_id(task_id)]

    @property
    def start_buffer(self) -> StartBufferOperator:
        return self._task(layout.START_BUFFER)  # type: ignore[no-any-return]

    @property
    def start_consumers(self) -> ConsumerOperator:
        return self._task(layout.START_CONSUMERS)  # type: ignore[no-any-return]

    @property
    def run_streamer(self) -> LCLStreamerOperator:
        return self._task(layout.RUN_STREAMER)  # type: ignore[no-any-return]

    @property
    def watch_transfer(self) -> TransferSensor:
        return self._task(layout.WATCH_TRANSFER)  # type: ignore[no-any-return]

    @property
    def wait_consumers(self) -> WaitJobsOperator:
        return self._task(layout.WAIT_CONSUMERS)  # type: ignore[no-any-return]

    @property
    def stop_jobs(self) -> StopJobsOperator:
        return self._task(layout.STOP_JOBS)  # type: ignore[no-any-return]

    @property
    def transfer_jobs(self) -> layout.JobSources:
        """``{role: (task_id, key)}``: where this group's jobs are in XCom."""
        return dict(self.stop_jobs.jobs_from)


def transfer_task_group(
    request: Any,
    *,
    group_id: str = "transfer",
    prefix_group_id: bool = False,
    stall_timeout: float = 300.0,
    poll_interval: float = 2.0,
    buffer_ready_timeout: float = 60.0,
    launcher: str = "mpiexec",
    deferrable: bool = _DEFERRABLE,
) -> TransferTaskGroup:
    """Build the group in the current DAG. ``request`` is a TransferRequest dict or XComArg."""
    return TransferTaskGroup(
        request,
        group_id=group_id,
        prefix_group_id=prefix_group_id,
        stall_timeout=stall_timeout,
        poll_interval=poll_interval,
        buffer_ready_timeout=buffer_ready_timeout,
        launcher=launcher,
        deferrable=deferrable,
    )
