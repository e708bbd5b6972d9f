"""SlurmBackend and SubmitJobOperator against the real single-node SLURM (slurmrestd).

Uses the cluster of ``scripts/services/slurm.sh`` (fixture ``slurm_service``); the job output
files are on this host, so ``log_tail`` can read them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.backends.slurm import SlurmBackend
from airflow_provider_lclstream.config.job import JobSpec
from tests.conftest import STATE_DIR
from tests.standalone import slurm_environment

pytestmark = [pytest.mark.slurm]


@pytest.fixture
def env(slurm_service: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = slurm_environment(STATE_DIR)
    monkeypatch.setenv("SLURM_CONF", values["SLURM_CONF"])
    monkeypatch.delenv("SLURM_JWT", raising=False)
    return values


@pytest.fixture
def backend(env: dict[str, str]) -> Iterator[SlurmBackend]:
    b = SlurmBackend(
        env["LCLSTREAM_SLURMRESTD_URL"],
        api_version=env["LCLSTREAM_SLURMRESTD_API"],
        job_defaults={"partition": "debug"},
    )
    yield b
    b.close()


def spec(tmp_path: Path, script: str, name: str) -> JobSpec:
    return JobSpec(
        name=name,
        script="#!/bin/bash\n" + script,
        directory=str(tmp_path),
        attributes={"standard_output": str(tmp_path / "out-%j.txt")},
        resources={"duration": 2},
    )


def wait_final(backend: SlurmBackend, job_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (status := backend.state(job_id)).is_final:
        assert time.monotonic() < deadline, f"{job_id}: {status}"
        time.sleep(0.3)
    return status


def test_submit_state_log_and_find(backend: SlurmBackend, tmp_path: Path) -> None:
    name = f"lcls-{uuid.uuid4().hex[:8]}"
    job_id = backend.submit(spec(tmp_path, "echo hello from slurm\nexit 0\n", name))
    status = wait_final(backend, job_id)
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0)
    assert backend.log_tail(job_id, 0)[0] == "hello from slurm\n"
    assert backend.find(name) == job_id


def test_failure_and_cancel(backend: SlurmBackend, tmp_path: Path) -> None:
    bad = backend.submit(spec(tmp_path, "echo oops\nexit 5\n", "lcls-bad"))
    status = wait_final(backend, bad)
    assert (status.state, status.exit_code) == (JobState.FAILED, 5)
    slow = backend.submit(spec(tmp_path, "sleep 120\n", "lcls-slow"))
    deadline = time.monotonic() + 30
    while backend.state(slow).state is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.3)
    backend.cancel(slow)
    assert wait_final(backend, slow).state is JobState.CANCELLED


async def test_async_half(backend: SlurmBackend, tmp_path: Path) -> None:
    job_id = await backend.asubmit(spec(tmp_path, "echo async\n", "lcls-async"))
    while not (status := await backend.astate(job_id)).is_final:
        time.sleep(0.3)
    assert status.state is JobState.COMPLETED
    assert (await backend.alog_tail(job_id, 0))[0] == "async\n"
    await backend.aclose()


@pytest.mark.airflow
def test_operator_over_slurm_connection(
    airflow_db: Path, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk import DAG

    from airflow_provider_lclstream.operators.submit_job import SubmitJobOperator
    from tests.dags.dag_runner import register

    conn = {
        "conn_type": "lclstream_slurm",
        "host": env["LCLSTREAM_SLURMRESTD_URL"],
        "extra": {
            "api_version": env["LCLSTREAM_SLURMRESTD_API"],
            "job_defaults": {"partition": "debug"},
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_TEST_SLURM", json.dumps(conn))
    errors: list[str] = []

    def on_failure(context: Any) -> None:
        errors.append(str(context.get("exception")))

    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with DAG(f"test_slurm_{uuid.uuid4().hex[:8]}", schedule=None, start_date=start) as dag:
        for task_id, code in (("ok", 0), ("bad", 4)):
            SubmitJobOperator(
                task_id=task_id,
                conn_id="test_slurm",
                job=spec(tmp_path, f"echo {task_id}\nexit {code}\n", task_id),
                poll_interval=0.3,
                on_failure_callback=on_failure,
            )
    register(dag)
    assert dag.test().state == "failed"
    (message,) = errors
    assert "exit code 4" in message and "bad" in message
