"""Fault scenario on the real services: the buffer process of a running ``lclstream_transfer``
killed (SIGKILL) mid-stream on SLURM.

The transfer must fail at once instead of waiting for timeouts: ``run_streamer``'s wait is
guarded by the buffer job, so it fails naming the buffer job that ended and cancels the streamer
job and the consumers; no job of the run is left running. The counts stay exact when the
cancelled ``srun`` SIGKILLs a rank before it handled its own SIGTERM (seen under load in CI):
each rank's tally counts every event it read (``streamer/tally.py``), and the job's shell
prints the tallies after the cancel. The failure says exactly how many
events are missing: the streamer's ranks and the consumers print their counts when cancelled
(SIGTERM), ``run_streamer`` reads them from the jobs' logs, pushes them to XCom ``accounting``
and names them in its error; the LCLStream API shows them as the transfer's ``final``. The test
checks them against the events in the consumer's files.

Found on the way: a resumed ``run_streamer`` (a new operator object after the deferral) asked
the *local* backend to cancel the SLURM streamer job and failed with ``JobNotFoundError``,
leaving the streamer running until the teardown; ``LCLStreamerOperator`` now resolves its
connection at every entry point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_lclstream.transfer.report import ACCOUNTING_XCOM_KEY
from tests.airflow_api import AirflowApi
from tests.integration.test_fault_transfer import (
    DAG,
    EVENTS,
    RANKS,
    h5_events,
    jobs_of_run,
    paced_request,
    wait_streaming,
)

pytestmark = [pytest.mark.airflow, pytest.mark.slurm, pytest.mark.mpi]


def buffer_process(env: dict[str, str], job_id: str) -> int:
    """The pid of ``lclstream-buffer`` among the processes of SLURM job ``job_id``."""
    out = subprocess.run(
        ["scontrol", "listpids", job_id], capture_output=True, text=True, timeout=30, env=env,
    ).stdout  # fmt: skip
    found = []
    for line in out.splitlines()[1:]:
        pid = line.split()[0] if line.split() else ""
        if pid.isdigit():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if any(part.endswith(b"lclstream-buffer") for part in cmdline[:2]):
                found.append(int(pid))
    assert len(found) == 1, f"job {job_id}: {out!r}"
    return found[0]


def task_log(api: AirflowApi, run_id: str, task_id: str) -> str:
    data = api.get(
        f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1", full_content=True
    )
    content = data.get("content", "")
    return str(content) if isinstance(content, str) else "\n".join(str(c) for c in content)


def test_buffer_killed_mid_stream_fails_the_transfer(airflow_standalone: dict[str, Any]) -> None:
    standalone = airflow_standalone
    api = AirflowApi(standalone["url"], standalone["user"], standalone["password"])
    env = {**standalone["env"], **standalone["slurm"]}
    api.unpause(DAG)
    output = standalone["output"] / "fault-buffer"
    run_id = api.trigger(DAG, {"request": paced_request(output)})
    wait_streaming(api, run_id, env, timeout=120)
    buffer_job = str(api.xcom(DAG, run_id, "start_buffer")["job_id"])
    os.kill(buffer_process(env, buffer_job), signal.SIGKILL)
    killed = time.monotonic()
    state = api.wait_for_run(DAG, run_id, timeout=180)
    took = time.monotonic() - killed
    tasks = api.tasks(DAG, run_id)
    assert state == "failed", tasks
    assert tasks["run_streamer"] == "failed" and tasks["stop_jobs"] == "success", tasks
    assert tasks["watch_transfer"] == "upstream_failed", tasks
    jobs = {task: found for task, found in jobs_of_run(env, run_id).items()}
    assert all(len(found) == 1 for found in jobs.values()), jobs
    streamer_job = jobs["run_streamer"][0][0]
    log = task_log(api, run_id, "run_streamer")
    assert f"job {buffer_job} ended failed while job {streamer_job} ran" in log, log[-3000:]
    assert "JobNotFoundError" not in log, log[-3000:]
    states = {task: found[0][2] for task, found in jobs.items()}
    assert states == {"start_buffer": "FAILED", "start_consumers": "CANCELLED",
                      "run_streamer": "CANCELLED"}, jobs  # fmt: skip
    delivered = h5_events(output)
    expected = RANKS * EVENTS
    assert delivered < expected
    accounting = api.xcom(DAG, run_id, "run_streamer", ACCOUNTING_XCOM_KEY)
    assert accounting["exact"] is True, f"{json.dumps(accounting)}\n{log[-3000:]}"
    produced, missing = accounting["produced"], accounting["missing"]
    assert accounting["delivered"] == delivered, (accounting, delivered)
    assert produced == delivered + missing and missing > 0, accounting
    assert delivered <= produced <= expected, accounting
    assert sorted(accounting["per_rank"]) == [str(r) for r in range(RANKS)], accounting
    line = f"{produced} events produced, {delivered} delivered, {missing} missing"
    assert line in log, log[-3000:]
    detail = httpx.get(
        f"{standalone['url']}/lclstream/v1/transfers/{run_id}",
        headers={"Authorization": api.client.headers["Authorization"]},
        timeout=30,
    )
    assert detail.status_code == 200, detail.text
    assert detail.json()["state"] == "failed", detail.json()
    final = detail.json()["final"]
    assert (final["produced"], final["delivered"], final["missing"]) == (
        produced, delivered, missing,
    ), final  # fmt: skip
    print(
        f"buffer killed: run failed {took:.1f} s later; {produced} of {expected} events "
        f"produced, {delivered} delivered, {missing} missing (the consumer's files: "
        f"{delivered}); jobs {states}"
    )
