"""Fault scenario on the real single-node SLURM: slurmctld restarted while a job is watched.

``JobStateTrigger`` (the code the triggerer runs for every deferred job wait) watches a job
through slurmrestd; slurmctld is stopped and started again from its saved state
(``scripts/services/slurm.sh restart-ctld``) while the job runs. The watch must go on through
the outage and report the job's real end, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.backends.slurm import SlurmBackend
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.triggers.job_state import JobStateTrigger
from tests.conftest import STATE_DIR, ensure_service, run_service_script
from tests.standalone import slurm_environment

pytestmark = [pytest.mark.slurm]


@pytest.fixture
def env(slurm_service: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    values = slurm_environment(STATE_DIR)
    monkeypatch.setenv("SLURM_CONF", values["SLURM_CONF"])
    monkeypatch.delenv("SLURM_JWT", raising=False)
    try:
        yield values
    finally:  # whatever happened, SLURM is left up for the tests after this one
        ensure_service("slurm")


def wait_state(backend: SlurmBackend, job_id: str, state: JobState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (status := backend.state(job_id)).state is not state:
        assert not status.is_final, f"job {job_id} ended {status} before the fault"
        assert time.monotonic() < deadline, f"job {job_id} not {state.value}: {status}"
        time.sleep(0.2)


async def test_slurmctld_restart_while_a_job_is_watched(
    env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kwargs: dict[str, Any] = {
        "url": env["LCLSTREAM_SLURMRESTD_URL"],
        "api_version": env["LCLSTREAM_SLURMRESTD_API"],
        "job_defaults": {"partition": "debug"},
    }
    backend = SlurmBackend(**kwargs)
    go = tmp_path / "go"
    # The job runs until the test lets it end: the restart lands mid-job on any machine speed.
    script = f"#!/bin/bash\necho started\nwhile [ ! -e {go} ]; do sleep 0.2; done\necho finished\n"
    spec = JobSpec.model_validate(
        {
            "name": f"lcls-fault-ctld-{uuid.uuid4().hex[:8]}",
            "script": script,
            "directory": str(tmp_path),
            "attributes": {"standard_output": str(tmp_path / "out-%j.txt")},
            "resources": {"duration": 5},
        }
    )
    job_id = backend.submit(spec)
    try:
        wait_state(backend, job_id, JobState.RUNNING, timeout=60)
        trigger = JobStateTrigger(
            job_id, backend="slurm", backend_kwargs=kwargs, poll_interval=0.5,
            max_poll_interval=1.0, max_errors=30,
        )  # fmt: skip
        events: list[dict[str, Any]] = []

        async def watch() -> None:
            async for event in trigger.run():
                events.append(event.payload)

        caplog.set_level(logging.INFO)
        watching = asyncio.create_task(watch())
        await asyncio.sleep(1.0)  # the watch has polled the running job
        assert not watching.done(), events
        began = time.monotonic()
        restarted = await asyncio.to_thread(run_service_script, "slurm", "restart-ctld", 120)
        took = time.monotonic() - began
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        # slurmctld is back from its saved state and still knows the job, which still runs
        assert backend.state(job_id).state is JobState.RUNNING
        await asyncio.sleep(1.5)  # the watch polls the new slurmctld
        assert not watching.done(), events
        go.touch()
        await asyncio.wait_for(watching, timeout=60)
    finally:
        go.touch()
        backend.close()
    failed_polls = [r for r in caplog.records if "state query failed" in r.getMessage()]
    print(f"slurmctld restarted in {took:.1f} s: {len(failed_polls)} state queries failed")
    assert len(events) == 1, events
    assert events[0]["status"] == "success", events
    assert (events[0]["state"], events[0]["exit_code"]) == ("completed", 0), events
    out = (tmp_path / f"out-{job_id}.txt").read_text()
    assert out == "started\nfinished\n", out
