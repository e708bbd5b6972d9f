"""The transfer task group: buffer, consumers and streamer are submitted one after the other
(the streamer last, guarded by the buffer job); URLs come from the buffer task's XCom, their host
the address of the node the buffer job landed on."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.exceptions import JobBackendError
from airflow_provider_lclstream.operators.transfer import buffer_url


def test_buffer_then_consumers_then_streamer() -> None:
    from airflow.sdk import DAG

    from airflow_provider_lclstream.task_groups.transfer import transfer_task_group

    for request in ({"synthetic": True, "buffer_ports": [5000, 5001, 5002]}, {"synthetic": True}):
        with DAG("group_shape", schedule=None) as dag:
            transfer_task_group(request)
        buffer = dag.get_task("start_buffer")
        assert buffer.wait_ready is False  # type: ignore[attr-defined]
        assert dag.get_task("start_consumers").upstream_task_ids == {"start_buffer"}
        assert dag.get_task("run_streamer").upstream_task_ids == {"start_consumers"}
        # Consumers are submitted, then the buffer must answer at its address within the timeout:
        assert dag.get_task("start_consumers").buffer_ready_timeout == 60.0  # type: ignore[attr-defined]
        assert dag.get_task("watch_transfer").upstream_task_ids == {"start_buffer", "run_streamer"}
        assert dag.get_task("stop_jobs").is_teardown


class FakeTi:
    """Stands in for a task instance's XCom: values appear when ``publish`` is called."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        return self.values.get((task_ids, key))


def test_fixed_ports_still_take_the_host_from_the_buffer_task() -> None:
    """A pin (``buffer_host``) is no address: the URLs wait for what the buffer task learned."""
    request = TransferRequest(
        synthetic=True,
        buffer_host="node7",
        buffer_ports=(5000, 5001, 5002),
        buffer={"backend": "slurm"},
    )
    ti = FakeTi()
    with pytest.raises(JobBackendError, match="published no input_url"):
        buffer_url({"ti": ti}, request, "input_url", "start_buffer", 0)  # type: ignore[arg-type]
    ti.values[("start_buffer", "input_url")] = "tcp://10.0.0.7:5000"
    assert buffer_url({"ti": ti}, request, "input_url", "start_buffer", 0) == "tcp://10.0.0.7:5000"  # type: ignore[arg-type]


def test_without_ports_the_url_is_awaited_from_the_buffer_task() -> None:
    ti = FakeTi()
    request = TransferRequest(synthetic=True)

    def publish() -> None:
        time.sleep(0.5)
        ti.values[("grp.start_buffer", "output_url")] = "tcp://127.0.0.1:6001"

    threading.Thread(target=publish).start()
    started = time.monotonic()
    url = buffer_url({"ti": ti}, request, "output_url", "grp.start_buffer", 10)  # type: ignore[arg-type]
    assert url == "tcp://127.0.0.1:6001" and time.monotonic() - started >= 0.4
    with pytest.raises(JobBackendError, match="start_buffer published no input_url"):
        buffer_url({"ti": FakeTi()}, request, "input_url", "start_buffer", 0.3)  # type: ignore[arg-type]


def test_a_buffer_job_that_dies_fails_the_wait_with_its_log(tmp_path: Any) -> None:
    """Real local jobs: one exits at once (its log is in the error), one is left unanswered
    (it is cancelled after the timeout)."""
    import socket

    from airflow_provider_lclstream.backends.local import LocalBackend
    from airflow_provider_lclstream.config.job import JobSpec
    from airflow_provider_lclstream.operators.buffer_wait import wait_buffer_ready

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there
    backend = LocalBackend(tmp_path / "jobs", kill_grace=1.0)
    dead = backend.submit(JobSpec(name="dies", script="echo cannot bind the port; exit 3"))
    with pytest.raises(JobBackendError, match="ended failed before it answered(.|\n)*cannot bind"):
        wait_buffer_ready(backend, dead, url, timeout_s=30)
    silent = backend.submit(JobSpec(name="silent", script="sleep 30"))
    with pytest.raises(JobBackendError, match="did not answer .* it was cancelled"):
        wait_buffer_ready(backend, silent, url, timeout_s=1.0)
    deadline = time.monotonic() + 10
    while not backend.state(silent).is_final and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend.state(silent).is_final


def test_the_buffer_address_is_the_node_its_job_runs_on(tmp_path: Any) -> None:
    """Real local jobs: a running job's node is this host (127.0.0.1); a job that ends before it
    runs fails with its log; a job never placed is cancelled after the timeout."""
    import logging
    import socket

    from airflow_provider_lclstream.backends.base import JobState, JobStatus
    from airflow_provider_lclstream.backends.local import LocalBackend
    from airflow_provider_lclstream.config.job import JobSpec
    from airflow_provider_lclstream.operators.buffer_wait import wait_buffer_placed

    log = logging.getLogger("test")
    backend = LocalBackend(tmp_path / "jobs", kill_grace=1.0)
    running = backend.submit(JobSpec(name="runs", script="sleep 30"))
    assert wait_buffer_placed(backend, running, 30, log) == "127.0.0.1"
    assert backend.state(running).nodes == (socket.gethostname(),)
    backend.cancel(running)
    dead = backend.submit(JobSpec(name="dies", script="echo no such option; exit 2"))
    time.sleep(1.0)
    with pytest.raises(JobBackendError, match="ended failed(.|\n)*no such option"):
        wait_buffer_placed(backend, dead, 30, log)

    class Queued(LocalBackend):
        """A cluster whose queue never starts the job; reports a node once told to."""

        node: str | None = None
        cancelled: list[str] = []

        def state(self, job_id: str) -> JobStatus:
            if self.node:
                return JobStatus(job_id, JobState.RUNNING, "RUNNING", nodes=(self.node,))
            return JobStatus(job_id, JobState.PENDING, "PENDING")

        def node_address(self, node: str) -> str:
            return {"n7": "10.1.2.7"}[node]

        def cancel(self, job_id: str) -> None:
            self.cancelled.append(job_id)

    queued = Queued(tmp_path / "q")
    with pytest.raises(JobBackendError, match=r"job 42 was not placed .*still PENDING.*cancelled"):
        wait_buffer_placed(queued, "42", 0.3, log)
    assert queued.cancelled == ["42"]
    queued.node = "n7"
    assert wait_buffer_placed(queued, "43", 1, log) == "10.1.2.7"


def test_a_buffer_placed_after_a_second_is_seen_within_a_fast_poll(tmp_path: Any) -> None:
    """The run start waits on this: the backend is asked every 0.1 s in the first seconds (a
    backoff to 2 s between polls lost up to 0.8 s of a ~1 s SLURM placement)."""
    import logging

    from airflow_provider_lclstream.backends.base import JobState, JobStatus
    from airflow_provider_lclstream.backends.local import LocalBackend
    from airflow_provider_lclstream.operators.buffer_wait import wait_buffer_placed

    class PlacedLater(LocalBackend):
        placed_at = time.monotonic() + 1.5

        def state(self, job_id: str) -> JobStatus:
            if time.monotonic() >= self.placed_at:
                return JobStatus(job_id, JobState.RUNNING, "RUNNING", nodes=("n7",))
            return JobStatus(job_id, JobState.PENDING, "PENDING")

        def node_address(self, node: str) -> str:
            return "10.1.2.7"

    backend = PlacedLater(tmp_path / "q")
    backend.placed_at = time.monotonic() + 1.5
    assert wait_buffer_placed(backend, "44", 30, logging.getLogger("test")) == "10.1.2.7"
    late = time.monotonic() - backend.placed_at
    assert late < 0.3, f"seen {late:.2f} s after placement"


def test_a_backend_that_names_no_node_learns_it_from_the_buffer_s_log(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psik does not say where a job runs: the buffer's own host line
    (``protocol.buffer_host_line``) in the job's log does; without one, 127.0.0.1 after
    ``HOST_LINE_WAIT_S``. Real local jobs, their nodes hidden."""
    import dataclasses
    import logging

    from airflow_provider_lclstream.backends.base import JobStatus
    from airflow_provider_lclstream.backends.local import LocalBackend
    from airflow_provider_lclstream.config.job import JobSpec
    from airflow_provider_lclstream.operators import buffer_wait
    from airflow_provider_lclstream.protocol import buffer_host_line

    class NoNodes(LocalBackend):
        def state(self, job_id: str) -> JobStatus:
            return dataclasses.replace(super().state(job_id), nodes=())

        def node_address(self, node: str) -> str:
            return {"sdfdtn003": "10.1.2.3"}[node]

    log = logging.getLogger("test")
    backend = NoNodes(tmp_path / "jobs", kill_grace=1.0)
    line = buffer_host_line("sdfdtn003")
    job = backend.submit(JobSpec(name="b", script=f"sleep 0.5; echo '{line}'; sleep 30"))
    try:
        assert buffer_wait.wait_buffer_placed(backend, job, 30, log) == "10.1.2.3"
    finally:
        backend.cancel(job)
    monkeypatch.setattr(buffer_wait, "HOST_LINE_WAIT_S", 0.5)
    silent = backend.submit(JobSpec(name="s", script="echo started; sleep 30"))
    try:
        assert buffer_wait.wait_buffer_placed(backend, silent, 30, log) == "127.0.0.1"
    finally:
        backend.cancel(silent)
