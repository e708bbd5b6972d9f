"""Airflow-native defaults: ``deferrable`` follows ``[operators] default_deferrable``, and the
extra links are URLs under ``[api] base_url``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# Every operator and sensor of the package with a ``deferrable`` argument, and the task group.
PROBE = """
import json
from airflow.sdk import DAG
from airflow_provider_lclstream.operators.submit_job import SubmitJobOperator
from airflow_provider_lclstream.operators.transfer import (
    ConsumerOperator, LCLStreamerOperator, StartBufferOperator, WaitJobsOperator,
)
from airflow_provider_lclstream.sensors.job import JobSensor
from airflow_provider_lclstream.task_groups.transfer import transfer_task_group

request = {"synthetic": True}
with DAG("probe", schedule=None) as dag:
    tasks = [
        SubmitJobOperator(task_id="submit", job={"script": "true"}),
        StartBufferOperator(task_id="buffer", request=request),
        ConsumerOperator(task_id="consumers", request=request),
        LCLStreamerOperator(task_id="streamer", request=request),
        WaitJobsOperator(task_id="wait", request=request, jobs_from=("consumers", "job_ids")),
        JobSensor(task_id="sensor", job_id="j"),
    ]
    transfer_task_group(request, group_id="grp", prefix_group_id=True)
grouped = [t for t in dag.tasks if t.task_id.startswith("grp.") and hasattr(t, "deferrable")]
print(json.dumps({t.task_id: t.deferrable for t in tasks + grouped}))
"""


@pytest.mark.parametrize("configured", [False, True])
def test_deferrable_follows_airflows_default_deferrable(configured: bool) -> None:
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": str(configured)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"submit", "buffer", "consumers", "streamer", "wait", "sensor"} <= set(values)
    grouped = {k for k in values if k.startswith("grp.")}
    assert grouped == {"grp.start_buffer", "grp.start_consumers", "grp.run_streamer",
                       "grp.wait_consumers"}  # fmt: skip
    assert set(values.values()) == {configured}, values


def test_an_explicit_deferrable_wins() -> None:
    from airflow_provider_lclstream.operators.transfer import WaitJobsOperator

    for value in (False, True):
        op = WaitJobsOperator(task_id="w", request={}, jobs_from=("a", "b"), deferrable=value)
        assert op.deferrable is value


def ti_key(dag_id: str, run_id: str, task_id: str = "start_buffer", map_index: int = -1) -> object:
    from airflow.models.taskinstancekey import TaskInstanceKey

    return TaskInstanceKey(dag_id, task_id, run_id, try_number=2, map_index=map_index)


def test_transfer_link_opens_the_transfers_page_of_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_lclstream.links import TransferLink

    run_id = "manual__2025-01-01T00:00:00+00:00 x&y"
    link = TransferLink()
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.org/af/")
    assert link.get_link(None, ti_key=ti_key("lclstream_transfer", run_id)) == (  # type: ignore[arg-type]
        "https://airflow.example.org/af/lclstream/ui"
        "?id=manual__2025-01-01T00%3A00%3A00%2B00%3A00%20x%26y"
    )
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:28080")
    assert link.get_link(None, ti_key=ti_key("lclstream_transfer", "r1")) == (  # type: ignore[arg-type]
        "http://127.0.0.1:28080/lclstream/ui?id=r1"
    )
    # The page lists the runs of lclstream_transfer only: no link for other DAGs.
    assert link.get_link(None, ti_key=ti_key("my_dag", "r1")) == ""  # type: ignore[arg-type]


def test_task_log_url_is_airflows_task_instance_page(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_lclstream.links import task_log_url

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow:8080")
    key = ti_key("lclstream_transfer", "manual__2025+1", "run_streamer")
    assert task_log_url(key) == (
        "http://airflow:8080/dags/lclstream_transfer/runs/manual__2025%2B1/tasks/run_streamer"
        "?try_number=2"
    )
    mapped = ti_key("d", "r", "t", map_index=0)
    assert task_log_url(mapped) == "http://airflow:8080/dags/d/runs/r/tasks/t/mapped/0?try_number=2"
