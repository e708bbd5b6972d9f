"""The transfer task group: buffer, consumers and streamer are submitted one right after the
other (the streamer last, guarded by the buffer job); URLs come from the request's ports or the
buffer task's XCom."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.exceptions import JobBackendError
from airflow_provider_lclstream.operators.transfer import buffer_url


def test_buffer_then_consumers_then_streamer_each_only_submitting() -> None:
    from airflow.sdk import DAG

    from airflow_provider_lclstream.task_groups.transfer import transfer_task_group

    for request in ({"synthetic": True, "buffer_ports": [5000, 5001, 5002]}, {"synthetic": True}):
        with DAG("group_shape", schedule=None) as dag:
            transfer_task_group(request)
        buffer = dag.get_task("start_buffer")
        assert buffer.wait_ready is False  # type: ignore[attr-defined]
        assert dag.get_task("start_consumers").upstream_task_ids == {"start_buffer"}
        assert dag.get_task("run_streamer").upstream_task_ids == {"start_consumers"}
        # Consumers only submit (nothing waits between the buffer's submit and the streamer's):
        assert dag.get_task("start_consumers").buffer_ready_timeout is None  # type: ignore[attr-defined]
        assert dag.get_task("watch_transfer").upstream_task_ids == {"start_buffer", "run_streamer"}
        assert dag.get_task("stop_jobs").is_teardown


class FakeTi:
    """Stands in for a task instance's XCom: values appear when ``publish`` is called."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        return self.values.get((task_ids, key))


def test_urls_come_from_the_request_ports_without_waiting() -> None:
    request = TransferRequest(synthetic=True, buffer_host="node7", buffer_ports=(5000, 5001, 5002))
    context: Any = {"ti": FakeTi()}
    assert buffer_url(context, request, "input_url", "start_buffer", 0) == "tcp://node7:5000"
    assert buffer_url(context, request, "output_url", "start_buffer", 0) == "tcp://node7:5001"


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
