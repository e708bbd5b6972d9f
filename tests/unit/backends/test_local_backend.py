"""The local backend: real processes, job dirs under tmp_path, no Airflow."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from airflow_provider_lclstream.backends.base import JobState, decode_log
from airflow_provider_lclstream.backends.local import RUNNER, LocalBackend
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.exceptions import JobNotFoundError


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "jobs", kill_grace=1.0)


def wait_final(backend: LocalBackend, job_id: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.state(job_id)
        if status.is_final:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {backend.state(job_id)} after {timeout} s")


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} not written in {timeout} s")


def test_completed_job_logs_and_offsets(backend: LocalBackend) -> None:
    job_id = backend.submit(JobSpec(name="ok", script="echo one\necho two >&2\necho three\n"))
    assert job_id.startswith("ok-")
    status = wait_final(backend, job_id)
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0)
    text, offset = backend.log_tail(job_id, 0)
    assert text == "one\ntwo\nthree\n" and offset == len(text)
    assert backend.log_tail(job_id, offset) == ("", offset)
    first, mid = backend.log_tail(job_id, 0, max_bytes=4)
    rest, end = backend.log_tail(job_id, mid)
    assert (first + rest, end) == (text, offset)
    assert backend.log_tail(job_id, -6) == ("three\n", offset)


def test_failed_job_has_exit_code(backend: LocalBackend) -> None:
    job_id = backend.submit(JobSpec(name="bad", script="echo boom; exit 3"))
    status = wait_final(backend, job_id)
    assert status.state is JobState.FAILED
    assert status.exit_code == 3 and status.native_state == "exited"
    assert "3" in (status.reason or "")


def test_environment_directory_and_shebang(backend: LocalBackend, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    spec = JobSpec(
        name="py",
        directory=str(workdir),
        script="#!" + sys.executable + "\nimport os\nprint(os.getcwd(), os.environ['X'], "
        "os.environ['LCLSTREAM_JOB_ID'], 'HOME' in os.environ)\n",
        environment={"X": "it's $HOME; `x`"},
        inherit_environment=False,
    )
    job_id = backend.submit(spec)
    assert wait_final(backend, job_id).state is JobState.COMPLETED
    text, _ = backend.log_tail(job_id)
    assert text.split() == [str(workdir), "it's", "$HOME;", "`x`", job_id, "False"]


def _pids(path: Path) -> list[int]:
    return [int(p) for p in wait_for_file(path).split()]


def test_cancel_kills_the_process_group(backend: LocalBackend, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    job_id = backend.submit(
        JobSpec(name="long", script=f"sleep 300 & sleep 300 & echo $! $$ > {pids}; wait")
    )
    children = _pids(pids)
    assert backend.state(job_id).state is JobState.RUNNING
    t0 = time.monotonic()
    backend.cancel(job_id)
    assert time.monotonic() - t0 < 5
    status = backend.state(job_id)
    assert status.state is JobState.CANCELLED and status.exit_code == 143
    assert not [
        p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
    ]
    backend.cancel(job_id)  # idempotent


def test_cancel_escalates_to_sigkill(backend: LocalBackend, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    job_id = backend.submit(
        JobSpec(name="stubborn", script=f"trap '' TERM\necho $$ > {pids}\nsleep 300 & wait")
    )
    (shell,) = _pids(pids)
    t0 = time.monotonic()
    backend.cancel(job_id)
    assert 0.9 < time.monotonic() - t0 < 8
    assert backend.state(job_id).state is JobState.CANCELLED
    assert not psutil.pid_exists(shell) or psutil.Process(shell).status() == "zombie"


def test_state_from_another_process(backend: LocalBackend, tmp_path: Path) -> None:
    job_id = backend.submit(JobSpec(name="x", script="sleep 0.3; exit 4"))
    code = (
        "import sys, time; from airflow_provider_lclstream.backends.local import LocalBackend\n"
        f"b = LocalBackend({str(backend.root)!r})\n"
        f"while not b.state({job_id!r}).is_final: time.sleep(0.05)\n"
        f"print(b.state({job_id!r}).to_dict()['state'], b.find('x'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["failed", job_id]


def test_find_returns_the_newest_job_of_a_name(backend: LocalBackend) -> None:
    assert backend.find("same") is None
    first = backend.submit(JobSpec(name="same", script="true"))
    second = backend.submit(JobSpec(name="same", script="true"))
    backend.submit(JobSpec(name="same-but-longer", script="true"))
    assert backend.find("same") == second != first
    assert backend.find("other") is None


@pytest.mark.parametrize("job_id", ["../etc", "a/b", "", "x y", ".hidden"])
def test_bad_or_unknown_job_ids(backend: LocalBackend, job_id: str) -> None:
    with pytest.raises(JobNotFoundError):
        backend.state(job_id)
    with pytest.raises(JobNotFoundError):
        backend.state("nosuchjob-20250101T000000-abcdef")


def test_runner_enforces_walltime(tmp_path: Path) -> None:
    """The runner writes the timeout marker and stops the group at its walltime."""
    proc = subprocess.Popen(
        [sys.executable, "-I", str(RUNNER), str(tmp_path), "0.5", "1", "bash", "-c", "sleep 60"],
        start_new_session=True,
    )
    assert proc.wait(timeout=15) == 0
    assert (tmp_path / "timeout").exists()
    assert json.loads((tmp_path / "result.json").read_text())["exit_code"] == 143


def test_lost_runner_reads_as_failed(backend: LocalBackend) -> None:
    job_id = backend.submit(JobSpec(name="lost", script="sleep 300"))
    info = json.loads((backend.job_dir(job_id) / "job.json").read_text())
    wait_for_file(backend.job_dir(job_id) / "started.json")
    os.killpg(info["pgid"], 9)
    status = wait_final(backend, job_id)
    assert status.state is JobState.FAILED and status.native_state == "lost"


async def test_async_methods(backend: LocalBackend) -> None:
    job_id = await backend.asubmit(JobSpec(name="async", script="echo hi"))
    while not (await backend.astate(job_id)).is_final:
        await asyncio.sleep(0.05)
    assert await backend.alog_tail(job_id, 0) == ("hi\n", 3)
    assert await backend.afind("async") == job_id


def test_decode_log_keeps_a_split_character_for_the_next_read() -> None:
    data = "é".encode()
    assert decode_log(b"ab" + data[:1], 10) == ("ab", 12)
    assert decode_log(data, 12) == ("é", 14)


@pytest.mark.mpi
def test_cancel_stops_mpiexec_ranks(backend: LocalBackend, mpiexec: str) -> None:
    job_id = backend.submit(JobSpec(name="mpi", script=f"{mpiexec} -n 2 sleep 300"))
    deadline = time.monotonic() + 20
    ranks: list[psutil.Process] = []
    info = json.loads((backend.job_dir(job_id) / "job.json").read_text())
    while time.monotonic() < deadline and len(ranks) < 2:
        time.sleep(0.1)
        tree = psutil.Process(info["pid"]).children(recursive=True)
        ranks = [p for p in tree if p.name() == "sleep"]
    assert len(ranks) == 2, "mpiexec did not start 2 ranks"
    backend.cancel(job_id)
    assert backend.state(job_id).state is JobState.CANCELLED
    gone, alive = psutil.wait_procs(ranks, timeout=5)
    assert not alive
