"""The embedded default backend: each job is a process group on this host.

A job lives in ``ROOT/JOB_ID/``: ``script``, ``output.log`` (stdout and stderr), ``job.json``
(written at submit), ``started.json`` and ``result.json`` (written by the runner), and the
markers ``cancel`` and ``timeout``. Everything needed to answer :meth:`LocalBackend.state` is in
those files, so another process on the same host (the triggerer, a retried task) can query and
cancel a job by id. The job id is ``<name>-<UTC time>-<random>`` and is also the directory name.

The job runs under ``_local_runner.py`` in a new session; cancelling sends SIGTERM to the whole
process group (``mpiexec`` and its ranks included) and SIGKILL after ``kill_grace`` seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from airflow_provider_lclstream.backends.base import (
    DEFAULT_LOG_CHUNK,
    BaseJobBackend,
    JobState,
    JobStatus,
    read_log_file,
)
from airflow_provider_lclstream.exceptions import JobBackendError, JobNotFoundError

if TYPE_CHECKING:
    from airflow_provider_lclstream.config.job import JobSpec

DEFAULT_ROOT = "~/.lclstream/jobs"
RUNNER = Path(__file__).with_name("_local_runner.py")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")
_SLUG = re.compile(r"[^A-Za-z0-9._+-]")


def _slug(name: str | None) -> str:
    return (_SLUG.sub("-", name or "job").strip("-._+") or "job")[:60]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # a partial write cannot happen (os.replace); treat as absent
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none of ``procs`` runs (zombies count as gone); return those still running."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    return alive


class LocalBackend(BaseJobBackend):
    """Run jobs as local processes under ``root`` (default ``~/.lclstream/jobs``; through a hook,
    ``[lclstream] jobs_dir``). Only processes on this host can see the jobs."""

    name = "local"

    def __init__(self, root: str | os.PathLike[str] | None = None, kill_grace: float = 10.0):
        self.root = Path(root or DEFAULT_ROOT).expanduser()
        self.kill_grace = kill_grace

    def __repr__(self) -> str:
        return f"LocalBackend(root={str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------
    def job_url(self, job_id: str) -> str | None:
        return (self.root / job_id / "output.log").as_uri()

    def job_dir(self, job_id: str) -> Path:
        """The directory of ``job_id``; refuses ids that are not plain names (no ``/``, ``..``)."""
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise JobNotFoundError(f"{job_id!r} is not a local job id (expected NAME-TIME-RANDOM)")
        return self.root / job_id

    def _job(self, job_id: str) -> tuple[Path, dict[str, Any]]:
        path = self.job_dir(job_id)
        info = _read_json(path / "job.json")
        if info is None:
            raise JobNotFoundError(f"no local job {job_id!r} under {self.root}")
        return path, info

    # -- submit --------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        while True:
            job_id = f"{_slug(spec.name)}-{stamp}-{secrets.token_hex(3)}"
            path = self.root / job_id
            try:
                path.mkdir(mode=0o700)
                break
            except FileExistsError:
                continue
        workdir = Path(spec.directory).expanduser() if spec.directory else path / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        script = path / "script"
        script.write_text(spec.script)
        if spec.script.startswith("#!"):
            script.chmod(0o700)
            cmd = [str(script)]
        else:
            cmd = ["bash", str(script)]
        env = dict(os.environ) if spec.inherit_environment else {}
        env.update(spec.environment)
        env.update({"LCLSTREAM_JOB_ID": job_id, "LCLSTREAM_JOB_DIR": str(path)})
        duration_s = spec.resources.duration * 60
        info: dict[str, Any] = {
            "job_id": job_id,
            "name": spec.name,
            "created": time.time(),
            "directory": str(workdir),
            "duration_s": duration_s,
            "command": cmd,
            "pid": None,
        }
        _write_json(path / "job.json", info)
        log = path / "output.log"
        with open(log, "ab") as out:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", str(RUNNER), str(path), str(duration_s)]
                    + [str(self.kill_grace), *cmd],
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as err:
                _write_json(path / "result.json", {"exit_code": 127, "error": str(err)})
                raise JobBackendError(f"cannot start local job {job_id}: {err}") from err
        # reap the runner when it ends, so it never lingers as a zombie of this process
        threading.Thread(target=proc.wait, name=f"reap-{job_id}", daemon=True).start()
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            create_time = None
        info.update(pid=proc.pid, pgid=proc.pid, pid_create_time=create_time)
        _write_json(path / "job.json", info)
        return job_id

    # -- state ---------------------------------------------------------------------------------
    @staticmethod
    def _runner_alive(info: dict[str, Any]) -> bool:
        pid = info.get("pid")
        if not pid:
            return False
        try:
            proc = psutil.Process(pid)
            if (
                info.get("pid_create_time")
                and abs(proc.create_time() - info["pid_create_time"]) > 1.0
            ):
                return False  # the pid was reused
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def state(self, job_id: str) -> JobStatus:
        """The job's state; a started job runs on this host (``nodes``: its host name)."""
        status = self._state(job_id)
        if status.state is JobState.PENDING:
            return status
        return dataclasses.replace(status, nodes=(socket.gethostname(),))

    def node_address(self, node: str) -> str:
        """127.0.0.1 for this host (every local job's), else the name as given."""
        return "127.0.0.1" if node == socket.gethostname() else node

    def _state(self, job_id: str) -> JobStatus:
        path, info = self._job(job_id)
        result = _read_json(path / "result.json")
        if result is None and self._runner_alive(info):
            if (path / "cancel").exists():
                return JobStatus(job_id, JobState.RUNNING, "cancelling")
            if (path / "started.json").exists():
                return JobStatus(job_id, JobState.RUNNING, "running")
            return JobStatus(job_id, JobState.PENDING, "starting")
        if result is None:  # the runner may have ended just now
            result = _read_json(path / "result.json")
        cancelled = (path / "cancel").exists()
        timed_out = (path / "timeout").exists()
        if result is None:
            if info.get("pid") is None and time.time() - info.get("created", 0) < 60:
                return JobStatus(job_id, JobState.PENDING, "submitting")
            state = (
                JobState.TIMEOUT
                if timed_out
                else JobState.CANCELLED
                if cancelled
                else JobState.FAILED
            )
            return JobStatus(
                job_id, state, "lost", None, "the runner process ended without an exit code"
            )
        code = result.get("exit_code")
        returncode = result.get("returncode", code)
        native = f"killed by signal {-returncode}" if returncode and returncode < 0 else "exited"
        if timed_out:
            minutes = info.get("duration_s", 0) / 60
            return JobStatus(job_id, JobState.TIMEOUT, native, code, f"walltime {minutes:g} min")
        if cancelled and code != 0:
            return JobStatus(job_id, JobState.CANCELLED, native, code, "cancelled")
        if code == 0:
            return JobStatus(job_id, JobState.COMPLETED, native, 0)
        reason = result.get("error") or f"exit code {code}"
        return JobStatus(job_id, JobState.FAILED, native, code, reason)

    # -- cancel --------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        """SIGTERM to the job's process group (and strays), SIGKILL after ``kill_grace`` s."""
        path, info = self._job(job_id)
        if (path / "result.json").exists():
            return
        (path / "cancel").write_text(str(time.time()))
        pgid = info.get("pgid")
        if not pgid or not self._runner_alive(info):
            return
        try:
            runner = psutil.Process(pgid)
            procs = [runner, *runner.children(recursive=True)]
        except psutil.Error:
            procs = []
        self._signal(pgid, procs, signal.SIGTERM)
        alive = _wait_gone(procs, self.kill_grace)
        if alive or self._group_exists(pgid):
            self._signal(pgid, alive, signal.SIGKILL)
            _wait_gone(alive, 5.0)
        if not (path / "result.json").exists():  # the runner itself was killed
            _write_json(path / "result.json", {"exit_code": 137, "returncode": -9})

    @staticmethod
    def _signal(pgid: int, procs: list[psutil.Process], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        for proc in procs:  # processes that left the group (setsid) but descend from the job
            try:
                if os.getpgid(proc.pid) != pgid:
                    proc.send_signal(sig)
            except (psutil.Error, ProcessLookupError):
                pass

    @staticmethod
    def _group_exists(pgid: int) -> bool:
        for proc in psutil.process_iter(["status"]):
            try:
                if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    return True
            except (ProcessLookupError, psutil.Error):
                continue
        return False

    # -- logs and lookup -----------------------------------------------------------------------
    def log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        path, _ = self._job(job_id)
        return read_log_file(path / "output.log", offset, max_bytes)

    def find(self, name: str) -> str | None:
        """The newest job submitted under ``name`` (exact match), or None."""
        if not self.root.is_dir():
            return None
        prefix = _slug(name) + "-"
        best: tuple[float, str] | None = None
        for entry in os.scandir(self.root):
            if not entry.name.startswith(prefix) or not entry.is_dir():
                continue
            info = _read_json(Path(entry.path) / "job.json")
            if info is None or info.get("name") != name:
                continue
            key = (float(info.get("created", 0)), entry.name)
            if best is None or key > best:
                best = key
        return best[1] if best else None
