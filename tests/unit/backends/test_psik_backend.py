"""PsikBackend over the installed psik 3.x (its ``local`` backend forks real processes)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.backends.psik_backend import (
    PsikBackend,
    sign_callback,
    verify_callback_signature,
)
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.exceptions import JobNotFoundError

pytest.importorskip("psik")


def wait_final(backend: PsikBackend, job_id: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (status := backend.state(job_id)).is_final:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status


def test_psik_job_lifecycle(tmp_path: Path) -> None:
    backend = PsikBackend(prefix=str(tmp_path / "psik"))
    ok = backend.submit(JobSpec(name="ok", script="echo hi from psik"))
    bad = backend.submit(JobSpec(name="bad", script="echo oops; exit 3"))
    assert wait_final(backend, ok).state is JobState.COMPLETED
    status = wait_final(backend, bad)
    assert (status.state, status.native_state, status.exit_code) == (JobState.FAILED, "failed", 3)
    assert backend.log_tail(ok) == ("hi from psik\n", 13)
    assert backend.log_tail(bad, -5) == ("oops\n", 5)
    assert backend.find("ok") == ok and backend.find("nope") is None
    with pytest.raises(JobNotFoundError):
        backend.state("../x")


def test_psik_cancel(tmp_path: Path) -> None:
    backend = PsikBackend(prefix=str(tmp_path / "psik"))
    job_id = backend.submit(JobSpec(name="slow", script="sleep 60"))
    deadline = time.monotonic() + 10
    while backend.state(job_id).state is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    backend.cancel(job_id)
    assert backend.state(job_id).state is JobState.CANCELLED


def test_callback_signature_matches_psik() -> None:
    from psik.web import sign_message

    body = '{"jobid": "1.0", "jobndx": 1, "state": "completed", "info": ""}'
    header = sign_callback(body, "s3cret")
    assert header == sign_message(body, "s3cret") and header.startswith("sha256=")
    assert verify_callback_signature(body.encode(), "s3cret", header)
    assert not verify_callback_signature(body, "wrong", header)
    assert not verify_callback_signature(body + " ", "s3cret", header)
    assert not verify_callback_signature(body, "s3cret", None)
