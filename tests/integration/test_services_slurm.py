"""The single-node SLURM of ``scripts/services/slurm.sh``: slurmrestd, sbatch/squeue, sacct -c."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from airflow_provider_lclstream.backends.slurm_rest import (
    JobState,
    SlurmJobNotFound,
    SlurmRestClient,
)
from tests.conftest import STATE_DIR

STATE = STATE_DIR / "slurm"  # a link to where slurm.sh keeps its files
JOB_TIMEOUT = 60.0
T = TypeVar("T")

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_service")]


def read_env_file(path: Path) -> dict[str, str]:
    """The ``export K=V`` lines of the env.sh that slurm.sh writes."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line.removeprefix("export ").partition("=")
            env[key.strip()] = value.strip()
    return env


@pytest.fixture(scope="module")
def slurm_env(slurm_service: None) -> Iterator[dict[str, str]]:
    """env.sh of the running cluster, also applied to os.environ (scontrol token, sbatch)."""
    env = read_env_file(STATE / "env.sh")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", env["SLURM_CONF"])
        mp.delenv("SLURM_JWT", raising=False)
        yield env


@pytest.fixture
def client(slurm_env: dict[str, str]) -> Iterator[SlurmRestClient]:
    url, version = slurm_env["LCLSTREAM_SLURMRESTD_URL"], slurm_env["LCLSTREAM_SLURMRESTD_API"]
    with SlurmRestClient(url, api_version=version, token_lifespan=600) as c:
        yield c


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30).stdout


def wait_done(client: SlurmRestClient, job_id: str, timeout: float = JOB_TIMEOUT) -> JobState:
    deadline = time.monotonic() + timeout
    while True:
        state = client.state(job_id)
        if state["done"]:
            return state
        assert time.monotonic() < deadline, f"job {job_id} not done after {timeout}s: {state}"
        time.sleep(0.5)


def wait_for(predicate: Callable[[], T], what: str, timeout: float = JOB_TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


def jobcomp_state(job_id: str) -> str:
    """The job's state in the jobcomp/filetxt record (``sacct -c``), '' while not written."""
    out = run("sacct", "-c", "-n", "-P", "-j", job_id, "-o", "JobID,State,ExitCode")
    for line in out.splitlines():
        fields = line.split("|")
        if fields[0] == job_id:
            return fields[1]
    return ""


def test_rest_job_completes_with_environment_and_cwd(
    client: SlurmRestClient, tmp_path: Path
) -> None:
    assert client.ping()["errors"] == []
    script = '#!/bin/bash\necho "value=$LCLSTREAM_TEST_VALUE"\necho "cwd=$(pwd)"\n'
    job_id = client.submit(
        script,
        {
            "name": "lclstream-rest-test",
            "partition": "debug",
            "current_working_directory": str(tmp_path),
            "environment": {"PATH": "/usr/bin:/bin", "LCLSTREAM_TEST_VALUE": "42"},
            "standard_output": str(tmp_path / "out-%j.txt"),
        },
    )
    state = wait_done(client, job_id)
    assert (state["state"], state["exit_code"], state["signal"]) == ("COMPLETED", 0, None)
    assert state["name"] == "lclstream-rest-test"
    assert state["start_time"] and state["end_time"]
    out = (tmp_path / f"out-{job_id}.txt").read_text()
    assert out.splitlines() == ["value=42", f"cwd={tmp_path}"]
    assert wait_for(lambda: jobcomp_state(job_id), f"sacct -c record of {job_id}") == "COMPLETED"


def test_rest_failed_job_reports_exit_code(client: SlurmRestClient, tmp_path: Path) -> None:
    job = {"current_working_directory": str(tmp_path), "standard_output": str(tmp_path / "o")}
    job_id = client.submit("#!/bin/bash\nexit 3\n", job)
    state = wait_done(client, job_id)
    assert (state["state"], state["exit_code"], state["signal"]) == ("FAILED", 3, None)
    assert wait_for(lambda: jobcomp_state(job_id), f"sacct -c record of {job_id}") == "FAILED"


def test_rest_cancel_running_job(client: SlurmRestClient, tmp_path: Path) -> None:
    job = {"current_working_directory": str(tmp_path), "standard_output": "/dev/null"}
    job_id = client.submit("#!/bin/bash\nsleep 300\n", job)
    wait_for(lambda: client.state(job_id)["state"] == "RUNNING", f"job {job_id} running")
    client.cancel(job_id)
    state = wait_done(client, job_id)
    assert state["state"] == "CANCELLED"
    client.cancel(job_id)  # already finished: not an error


def test_rest_unknown_job(client: SlurmRestClient) -> None:
    with pytest.raises(SlurmJobNotFound, match="99999999"):
        client.state(99999999)


def test_cli_sbatch_squeue_scontrol(slurm_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "cli.out"
    job_id = run(
        "sbatch", "--parsable", "--hold", "-D", str(tmp_path), "-o", str(out),
        "--wrap", "echo cli-ok",
    ).strip().split(";")[0]  # fmt: skip
    assert run("squeue", "-h", "-j", job_id, "-o", "%i %T").split() == [job_id, "PENDING"]
    run("scontrol", "release", job_id)
    wait_for(lambda: jobcomp_state(job_id), f"sacct -c record of {job_id}")
    assert jobcomp_state(job_id) == "COMPLETED"
    assert out.read_text() == "cli-ok\n"
    assert "JobState=COMPLETED" in run("scontrol", "show", "job", job_id)
