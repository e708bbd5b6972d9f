"""SlurmBackend (slurmrestd) and SlurmCliBackend (sbatch/scontrol/sacct -c) on the real
single-node SLURM of ``scripts/services/slurm.sh``; job output files are on this host."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from airflow_provider_lclstream.backends.base import JobBackend, JobState, JobStatus
from airflow_provider_lclstream.backends.slurm import SlurmBackend
from airflow_provider_lclstream.backends.slurm_cli import (
    CommandResult,
    LocalRunner,
    SlurmCliBackend,
)
from airflow_provider_lclstream.config.job import JobSpec, ResourceSpec
from airflow_provider_lclstream.exceptions import JobNotFoundError
from tests.conftest import STATE_DIR
from tests.standalone import slurm_environment

TIMEOUT = 90.0
T = TypeVar("T")

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_service")]


@pytest.fixture
def env(slurm_service: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = slurm_environment(STATE_DIR)
    monkeypatch.setenv("SLURM_CONF", values["SLURM_CONF"])
    monkeypatch.delenv("SLURM_JWT", raising=False)
    return values


def rest_backend(env: Mapping[str, str]) -> SlurmBackend:
    return SlurmBackend(env["LCLSTREAM_SLURMRESTD_URL"], job_defaults={"partition": "debug"})


@pytest.fixture(params=["rest", "cli"])
def backend(request: pytest.FixtureRequest, env: dict[str, str]) -> Iterator[JobBackend]:
    if request.param == "rest":
        b: SlurmBackend | SlurmCliBackend = rest_backend(env)
    else:
        b = SlurmCliBackend(job_defaults={"partition": "debug"}, accounting="jobcomp")
    yield b
    b.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(predicate: Callable[[], T], what: str, timeout: float = TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return result


def wait_final(backend: JobBackend, job_id: str, timeout: float = TIMEOUT) -> JobStatus:
    deadline = time.monotonic() + timeout
    while not (status := backend.state(job_id)).is_final:
        assert time.monotonic() < deadline, f"job {job_id} not done after {timeout}s: {status}"
        time.sleep(0.3)
    return status


def jobcomp_state(job_id: str) -> str:
    """The job's state in ``sacct -c`` (jobcomp/filetxt), '' until written."""
    out = subprocess.run(
        ["sacct", "-c", "-n", "-P", "-j", job_id, "-o", "JobID,State"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return next(
        (s for i, _, s in (ln.partition("|") for ln in out.splitlines()) if i == job_id), ""
    )


def mpi_script(mpiexec: str) -> str:
    # One write per rank: two ranks' print() calls can interleave ("01\n\n" was seen).
    code = 'import os; from mpi4py import MPI; os.write(1, b"%d\\n" % MPI.COMM_WORLD.Get_rank())'
    return f"#!/bin/bash\n{mpiexec} -n 2 {sys.executable} -c '{code}'\n"


def test_mpi_job_completes_with_both_ranks_in_log(
    backend: JobBackend, mpiexec: str, tmp_path: Path
) -> None:
    name = unique("lcls-mpi")
    spec = JobSpec(
        name=name,
        script=mpi_script(mpiexec),
        directory=str(tmp_path),
        resources=ResourceSpec(duration=5, process_count=2),
    )
    job_id = backend.submit(spec)
    status = wait_final(backend, job_id)
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0), status
    assert status.native_state == "COMPLETED"
    text, offset = backend.log_tail(job_id, 0)
    assert sorted(text.split()) == ["0", "1"]
    assert (tmp_path / f"slurm-{name}-{job_id}.out").read_text() == text
    assert backend.log_tail(job_id, offset) == ("", offset)
    assert backend.log_tail(job_id, -2)[0] == text[-2:]
    assert backend.find(name) == job_id


def test_failing_script_reports_exit_code(backend: JobBackend, tmp_path: Path) -> None:
    name = unique("lcls-fail")
    spec = JobSpec(
        name=name,
        script="echo before failing\necho 'detector offline' >&2\nexit 3\n",
        directory=str(tmp_path),
        environment={"LCLS_VALUE": "a b,c"},
        resources=ResourceSpec(duration=2),
    )
    job_id = backend.submit(spec)
    status = wait_final(backend, job_id)
    assert (status.state, status.exit_code, status.native_state) == (JobState.FAILED, 3, "FAILED")
    assert status.reason
    assert backend.log_tail(job_id, 0)[0] == "before failing\ndetector offline\n"


def test_cancel_running_job(backend: JobBackend, tmp_path: Path) -> None:
    name = unique("lcls-cancel")
    spec = JobSpec(name=name, script="echo started\nsleep 300\n", directory=str(tmp_path))
    job_id = backend.submit(spec)
    wait_for(lambda: backend.state(job_id).state is JobState.RUNNING, f"job {job_id} running")
    backend.cancel(job_id)
    status = wait_final(backend, job_id)
    assert status.state is JobState.CANCELLED
    assert status.native_state == "CANCELLED"
    backend.cancel(job_id)  # already ended: not an error
    assert wait_for(lambda: jobcomp_state(job_id), f"sacct -c of {job_id}").startswith("CANCELLED")
    assert backend.find(name) == job_id


def test_environment_and_find_newest(backend: JobBackend, tmp_path: Path) -> None:
    name = unique("lcls-env")
    spec = JobSpec(
        name=name,
        script='echo "value=$LCLS_VALUE cwd=$(pwd)"\n',
        directory=str(tmp_path),
        environment={"LCLS_VALUE": "x y,z"},
    )
    first = backend.submit(spec)
    second = backend.submit(spec)
    assert wait_final(backend, second).state is JobState.COMPLETED
    assert backend.log_tail(second)[0] == f"value=x y,z cwd={tmp_path}\n"
    assert backend.find(name) == second != first
    assert backend.find(unique("lcls-never-submitted")) is None


def test_unknown_job(backend: JobBackend) -> None:
    with pytest.raises(JobNotFoundError):
        backend.state("99999999")


async def test_rest_async_half(env: dict[str, str], mpiexec: str, tmp_path: Path) -> None:
    backend = rest_backend(env)
    name = unique("lcls-async")
    spec = JobSpec(
        name=name,
        script=mpi_script(mpiexec),
        directory=str(tmp_path),
        resources=ResourceSpec(process_count=2),
    )
    try:
        job_id = await backend.asubmit(spec)
        deadline = time.monotonic() + TIMEOUT
        while not (status := await backend.astate(job_id)).is_final:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.3)
        assert (status.state, status.exit_code) == (JobState.COMPLETED, 0)
        assert sorted((await backend.alog_tail(job_id))[0].split()) == ["0", "1"]
        assert await backend.afind(name) == job_id
        slow = await backend.asubmit(spec.model_copy(update={"script": "sleep 300"}))
        await backend.acancel(slow)
        while not (status := await backend.astate(slow)).is_final:
            await asyncio.sleep(0.3)
        assert status.state is JobState.CANCELLED
    finally:
        await backend.aclose()
    assert backend.api_version == env["LCLSTREAM_SLURMRESTD_API"]  # probed: the one served


def test_rest_log_tail_from_another_backend_instance(env: dict[str, str], tmp_path: Path) -> None:
    """A fresh backend (the triggerer) finds the output file through the job record."""
    with_name = unique("lcls-other")
    a, b = rest_backend(env), rest_backend(env)
    job_id = a.submit(JobSpec(name=with_name, script="echo hi", directory=str(tmp_path)))
    wait_final(b, job_id)
    assert b.log_tail(job_id) == ("hi\n", 3)
    a.close()
    b.close()


class ForgetfulRunner(LocalRunner):
    """A runner whose slurmctld has purged every job (past MinJobAge)."""

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> CommandResult:
        if argv[0] == "scontrol":
            return CommandResult(1, b"", b"slurm_load_jobs error: Invalid job id specified")
        if argv[0] == "squeue":
            return CommandResult(0, b"", b"")
        return super().run(argv, stdin, env)


def test_cli_falls_back_to_jobcomp_after_purge(env: dict[str, str], tmp_path: Path) -> None:
    live = SlurmCliBackend(accounting="jobcomp")
    name = unique("lcls-purged")
    job_id = live.submit(
        JobSpec(
            name=name,
            script="exit 4",
            directory=str(tmp_path),
            resources=ResourceSpec(duration=1),
        )
    )
    assert wait_final(live, job_id).exit_code == 4
    wait_for(lambda: jobcomp_state(job_id), f"sacct -c of {job_id}")
    purged = SlurmCliBackend(accounting="auto", runner=ForgetfulRunner())
    status = purged.state(job_id)
    assert (status.state, status.exit_code, status.native_state) == (JobState.FAILED, 4, "FAILED")
    assert purged.find(name) == job_id
    assert purged.log_tail(job_id) == ("", 0)  # no record left that names the output file


def test_cli_remote_log_reader(tmp_path: Path) -> None:
    """The shell snippet used over SSH, run through the local runner."""
    log = tmp_path / "it's a log.out"
    log.write_bytes("abc\nd\u00e9f\n".encode())
    backend = SlurmCliBackend()
    assert backend.read_remote_log(str(log), 0, 100) == ("abc\ndéf\n", 9)
    assert backend.read_remote_log(str(log), 4, 2) == ("d", 5)  # stops before a split 'é'
    assert backend.read_remote_log(str(log), -4, 100) == ("éf\n", 9)
    assert backend.read_remote_log(str(tmp_path / "missing"), 7, 100) == ("", 7)
