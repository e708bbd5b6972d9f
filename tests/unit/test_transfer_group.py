"""The transfer task group: the three start tasks run together; URLs come from the request."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.exceptions import JobBackendError
from airflow_provider_lclstream.operators.transfer import buffer_url


def test_start_tasks_do_not_wait_for_each_other() -> None:
    from airflow.sdk import DAG

    from airflow_provider_lclstream.task_groups.transfer import transfer_task_group

    with DAG("group_shape", schedule=None) as dag:
        transfer_task_group({"synthetic": True, "buffer_ports": [5000, 5001, 5002]})
    starts = {"start_buffer", "start_consumers", "run_streamer"}
    for task_id in starts:
        assert not dag.get_task(task_id).upstream_task_ids & starts, task_id
    assert dag.get_task("watch_transfer").upstream_task_ids == starts
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
