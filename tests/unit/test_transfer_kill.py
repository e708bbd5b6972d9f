"""Killing a transfer task cancels every job of the transfer, also in a prefixed group; the
teardown stops everything it can and reports every job it could not stop.

Real local jobs (``sleep``) stand for the buffer, consumers and streamer; a fake task instance
holds their ids in XCom under the group's real (prefixed) task ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_lclstream.backends.base import JobState, JobStatus
from airflow_provider_lclstream.backends.local import LocalBackend
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.exceptions import JobBackendError, JobNotFoundError, StopJobsError
from airflow_provider_lclstream.transfer import layout

REQUEST = {"synthetic": True, "consumers": 2, "buffer_ports": [5000, 5001, 5002]}


class FakeTi:
    """A task instance's XCom, keyed by (task_id, key)."""

    def __init__(self, task_id: str, values: dict[tuple[str, str], Any]) -> None:
        self.task_id = task_id
        self.map_index = -1
        self.values = values

    def xcom_pull(self, task_ids: str, key: str, map_indexes: Any = None) -> Any:
        return self.values.get((task_ids, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self.values[(self.task_id, key)] = value


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBackend]:
    root = tmp_path / "jobs"
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(root))
    local = LocalBackend(root, kill_grace=1.0)
    yield local
    for job in root.iterdir() if root.exists() else ():  # stop what a test left running
        if job.is_dir() and not local.state(job.name).is_final:
            local.cancel(job.name)


def wait_final(backend: LocalBackend, job_id: str, timeout: float = 15.0) -> JobState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.state(job_id)
        if status.is_final:
            return status.state
        time.sleep(0.1)
    return backend.state(job_id).state


def prefixed_group() -> Any:
    from airflow.sdk import DAG

    from airflow_provider_lclstream.task_groups.transfer import transfer_task_group

    with DAG("kill_prefixed", schedule=None):
        group = transfer_task_group(REQUEST, group_id="grp", prefix_group_id=True)
    return group


def test_a_prefixed_group_hands_its_tasks_the_real_ids() -> None:
    group = prefixed_group()
    assert group.run_streamer.task_id == "grp.run_streamer"
    expected = {
        layout.BUFFER: ("grp.start_buffer", layout.JOB_ID),
        layout.CONSUMER: ("grp.start_consumers", layout.JOB_IDS),
        layout.STREAMER: ("grp.run_streamer", layout.JOB_ID),
    }
    assert group.transfer_jobs == expected
    for task in (group.run_streamer, group.watch_transfer, group.wait_consumers):
        assert task.transfer_jobs == expected
    assert group.stop_jobs.jobs_from == expected
    assert group.start_consumers.buffer_task == "grp.start_buffer"
    assert group.run_streamer.buffer_task == "grp.start_buffer"
    assert group.wait_consumers.jobs_from == ("grp.start_consumers", layout.JOB_IDS)


def kill(group: Any, task_name: str, how: str, context: dict[str, Any], streamer: str) -> None:
    """Kill ``task_name`` of the group as Airflow would: the running task's ``on_kill``
    ("worker"), or the deferred task's trigger's ``on_kill`` ("trigger")."""
    from airflow.sdk.exceptions import TaskDeferred

    task = getattr(group, task_name)
    if task_name == layout.RUN_STREAMER:
        task._context, task._job_id = context, streamer
        if how == "worker":
            task._job_id = None  # a rebuilt operator: the job id comes from XCom
            task.on_kill()
            return
        with pytest.raises(TaskDeferred) as deferred:
            task._defer(streamer, 0)
    elif task_name == layout.WAIT_CONSUMERS:
        task._context = context
        if how == "worker":
            task.on_kill()
            return
        task.deferrable, task.grace_s = True, 0.0
        with pytest.raises(TaskDeferred) as deferred:
            task.execute(context)
    else:  # watch_transfer: always deferred
        with pytest.raises(TaskDeferred) as deferred:
            task.execute(context)
    asyncio.run(deferred.value.trigger.on_kill())


@pytest.mark.parametrize(
    ("task_name", "how"),
    [
        (layout.RUN_STREAMER, "worker"),
        (layout.RUN_STREAMER, "trigger"),
        (layout.WATCH_TRANSFER, "trigger"),
        (layout.WAIT_CONSUMERS, "worker"),
        (layout.WAIT_CONSUMERS, "trigger"),
    ],
)
def test_killing_any_task_of_a_prefixed_group_cancels_every_job(
    backend: LocalBackend, task_name: str, how: str
) -> None:
    group = prefixed_group()
    sleep = "#!/bin/bash\nsleep 60\n"
    buffer = backend.submit(JobSpec(name="buffer", script=sleep))
    consumers = [backend.submit(JobSpec(name=f"consumer-{i}", script=sleep)) for i in range(2)]
    streamer = backend.submit(JobSpec(name="streamer", script=sleep))
    values = {
        ("grp.start_buffer", layout.JOB_ID): buffer,
        ("grp.start_buffer", layout.METRICS_URL): "http://127.0.0.1:1",
        ("grp.start_consumers", layout.JOB_IDS): consumers,
        ("grp.run_streamer", layout.JOB_ID): streamer,
    }
    context: dict[str, Any] = {"ti": FakeTi(getattr(group, task_name).task_id, values)}
    group.watch_transfer.metrics_url = "http://127.0.0.1:1"  # rendered from XCom in Airflow

    kill(group, task_name, how, context, streamer)

    for job in (buffer, *consumers, streamer):
        assert wait_final(backend, job) is JobState.CANCELLED, (task_name, how, job)


# -- the teardown ---------------------------------------------------------------------------


class HalfBrokenBackend:
    """Every job runs; cancelling ``refuses`` fails (a library error, not the backend contract's),
    ``gone`` is unknown to the backend."""

    def __init__(self, refuses: str, gone: str) -> None:
        self.refuses, self.gone = refuses, gone
        self.cancelled: list[str] = []

    def state(self, job_id: str) -> JobStatus:
        if job_id == self.gone:
            raise JobNotFoundError(f"no job {job_id}")
        return JobStatus(job_id, JobState.RUNNING, "RUNNING", None)

    def cancel(self, job_id: str) -> None:
        if job_id == self.refuses:
            raise RuntimeError("scancel: connection reset")
        self.cancelled.append(job_id)


def hook_of(backend: HalfBrokenBackend) -> type:
    class Hook:
        def __init__(self, conn_id: str | None) -> None:
            self.conn_id = conn_id

        def get_conn(self) -> HalfBrokenBackend:
            return backend

    return Hook


def test_stop_jobs_cancels_everything_it_can_and_reports_every_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_lclstream.operators import jobs as transfer_ops

    fake = HalfBrokenBackend(refuses="c1", gone="c2")
    monkeypatch.setattr(transfer_ops, "JobBackendHook", hook_of(fake))
    group = prefixed_group()
    values = {
        ("grp.start_buffer", layout.JOB_ID): "b",
        ("grp.start_consumers", layout.JOB_IDS): ["c0", "c1", "c2", "c3"],
        ("grp.run_streamer", layout.JOB_ID): "s",
    }
    with pytest.raises(StopJobsError) as failed:
        group.stop_jobs.execute({"ti": FakeTi("grp.stop_jobs", values)})
    # the refused cancel stopped nothing else: every other running job was cancelled
    assert fake.cancelled == ["b", "c0", "c3", "s"]
    assert failed.value.cancelled == {"buffer": ["b"], "consumer": ["c0", "c3"], "streamer": ["s"]}
    assert len(failed.value.failures) == 1 and "c1" in failed.value.failures[0]
    assert "connection reset" in str(failed.value) and isinstance(failed.value, JobBackendError)


def test_stop_jobs_returns_what_it_cancelled_when_all_went_well(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_lclstream.operators import jobs as transfer_ops

    fake = HalfBrokenBackend(refuses="none", gone="none")
    monkeypatch.setattr(transfer_ops, "JobBackendHook", hook_of(fake))
    values = {("start_buffer", layout.JOB_ID): "b", ("start_consumers", layout.JOB_IDS): []}
    stop = transfer_ops.StopJobsOperator(task_id="stop", request=REQUEST)  # default layout
    assert stop.execute({"ti": FakeTi("stop", values)}) == {"buffer": ["b"]}  # type: ignore[arg-type]


# -- the cascade itself -----------------------------------------------------------------------


def test_acancel_all_stays_async_and_goes_on_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the triggerer's loop: the connection is read and each job cancelled through the async
    half (a sync call fails this test); one refused cancel does not stop the others."""
    from airflow_provider_lclstream.hooks import linked_jobs as cascade

    cancelled: list[str] = []

    class AsyncOnly:
        def cancel(self, job_id: str) -> None:
            raise AssertionError("sync cancel on the event loop")

        async def acancel(self, job_id: str) -> None:
            if job_id == "bad":
                raise OSError("unreachable")
            cancelled.append(job_id)

        async def aclose(self) -> None:
            pass

    class Hook:
        def __init__(self, conn_id: str | None) -> None:
            pass

        def get_conn(self) -> Any:
            raise AssertionError("sync get_conn on the event loop")

        async def aget_conn(self) -> AsyncOnly:
            return AsyncOnly()

    monkeypatch.setattr(cascade, "JobBackendHook", Hook)
    failures = asyncio.run(cascade.acancel_all([[None, "a"], ["x", "bad"], [None, "c"]]))
    assert cancelled == ["a", "c"]
    assert len(failures) == 1 and "bad" in failures[0] and "unreachable" in failures[0]
