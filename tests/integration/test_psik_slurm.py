"""psik's own SLURM backend, through our psik job backend, on the real single-node SLURM."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_lclstream.backends.base import JobState, JobStatus
from airflow_provider_lclstream.backends.psik_backend import PsikBackend
from airflow_provider_lclstream.config.job import JobSpec, ResourceSpec
from tests.conftest import STATE_DIR
from tests.standalone import slurm_environment

pytestmark = pytest.mark.slurm


@pytest.fixture
def backend(slurm_service: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PsikBackend:
    monkeypatch.setenv("SLURM_CONF", slurm_environment(STATE_DIR)["SLURM_CONF"])
    # psik's job scripts call the ``psik`` command to report their state
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return PsikBackend(prefix=str(tmp_path / "psik"), backend_type="slurm")


def wait_for(backend: PsikBackend, job_id: str, done: bool = True) -> JobStatus:
    deadline = time.monotonic() + 60
    while True:
        status = backend.state(job_id)
        if status.is_final if done else status.state is JobState.RUNNING:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


def spec(name: str, script: str) -> JobSpec:
    return JobSpec(name=name, script=script, resources=ResourceSpec(exclusive_node_use=False))


def test_psik_slurm_job_completes_and_fails(backend: PsikBackend) -> None:
    ok = backend.submit(spec("ok", "echo hi from psik on slurm"))
    bad = backend.submit(spec("bad", "echo oops; exit 4"))
    assert wait_for(backend, ok).state is JobState.COMPLETED
    assert backend.log_tail(ok)[0] == "hi from psik on slurm\n"
    status = wait_for(backend, bad)
    assert status.state is JobState.FAILED and status.exit_code == 4, status
    assert backend.find("ok") == ok


def test_psik_slurm_cancel(backend: PsikBackend) -> None:
    job_id = backend.submit(spec("slow", "sleep 120"))
    wait_for(backend, job_id, done=False)
    backend.cancel(job_id)
    assert wait_for(backend, job_id).state is JobState.CANCELLED
