"""SLURM through its command-line tools: sbatch, scontrol, squeue, sacct, scancel.

The tools run on this host, or on a login node over SSH through an Airflow SSH connection
(``ssh_conn_id``; needs ``apache-airflow-providers-ssh``). The script goes to ``sbatch`` on
stdin (base64-encoded over SSH) with ``--parsable``; the spec's environment is passed through
``sbatch``'s own environment and ``--export``.

State comes from ``scontrol show job --json`` while slurmctld holds the job (``MinJobAge``
after it ends): the record slurmrestd serves, read by the SLURM library's
:func:`~.slurm.normalize_job`. SLURM before 23.02 has no ``scontrol --json``; there
``squeue --json`` gives the same record (22.05 ignores its filters and lists every job, so the
job is picked out here). After that, ``sacct``: with slurmdbd, or ``sacct -c``
(``accounting="jobcomp"``) where only ``JobCompType=jobcomp/filetxt`` records finished jobs.
``find(name)`` looks in both. Options and scripts come from :mod:`.sbatch` and :mod:`.slurm`.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import json
import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from airflow_provider_lclstream.backends.base import (
    DEFAULT_LOG_CHUNK,
    BaseJobBackend,
    JobStatus,
    decode_log,
)
from airflow_provider_lclstream.backends.sbatch import sbatch_args
from airflow_provider_lclstream.backends.slurm import (
    SlurmJob,
    expand_output_path,
    job_status,
    normalize_job,
    parse_exit_code,
    read_log_file,
    status_from_native,
    with_shebang,
)
from airflow_provider_lclstream.config.job import shell_join, shell_quote
from airflow_provider_lclstream.exceptions import (
    JobBackendError,
    JobNotFoundError,
    MissingDependencyError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_provider_lclstream.config.job import JobSpec

Accounting = Literal["auto", "sacct", "jobcomp", "none"]
_JOB_ID = re.compile(r"[0-9]+")
#: slurm_errno.h: ESLURM_INVALID_JOB_ID
_INVALID_JOB_ID = 2017
#: Lines of the shell snippet that reads a log over SSH: first the start offset, then the bytes.
_READ_LOG = (
    'f={path}; s=$(stat -c %s "$f" 2>/dev/null) || exit 3; o={offset}; '
    'if [ "$o" -lt 0 ]; then o=$((s + o)); [ "$o" -lt 0 ] && o=0; fi; '
    '[ "$o" -gt "$s" ] && o=$s; echo "$o"; tail -c +$((o + 1)) "$f" | head -c {max_bytes}'
)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def error(self) -> str:
        return (self.stderr or self.stdout).decode("utf-8", errors="replace").strip()[-1000:]


class Runner(Protocol):
    """Runs one command (an argv) where the SLURM tools are; ``remote`` says if files are far."""

    remote: bool
    user: str

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> CommandResult: ...

    def close(self) -> None: ...


class LocalRunner:
    """The SLURM tools of this host, through ``subprocess``."""

    remote = False

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.user = getpass.getuser()

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> CommandResult:
        cmd = ["env", *(f"{k}={v}" for k, v in (env or {}).items()), *argv] if env else argv
        try:
            proc = subprocess.run(
                list(cmd),
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as err:
            raise JobBackendError(f"{argv[0]!r} not found on this host: {err}") from err
        except subprocess.TimeoutExpired as err:
            raise JobBackendError(f"`{shell_join(argv)}` took over {self.timeout}s") from err
        except OSError as err:
            raise JobBackendError(f"cannot run `{shell_join(argv)}` on this host: {err}") from err
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def close(self) -> None:
        """Nothing to release."""


class SshRunner:
    """The SLURM tools of a login node, through the Airflow SSH connection ``ssh_conn_id``."""

    remote = True

    def __init__(self, ssh_conn_id: str, timeout: float = 60.0) -> None:
        try:
            from airflow.providers.ssh.hooks.ssh import SSHHook
        except ImportError as err:
            raise MissingDependencyError(
                "apache-airflow-providers-ssh", "ssh", "the SLURM CLI backend over SSH"
            ) from err
        self.timeout = timeout
        self.ssh_conn_id = ssh_conn_id
        self.hook = SSHHook(ssh_conn_id=ssh_conn_id, cmd_timeout=timeout)
        self.user = str(self.hook.username or getpass.getuser())
        self._client: Any = None

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> CommandResult:
        line = shell_join(["env", *(f"{k}={v}" for k, v in env.items()), *argv] if env else argv)
        if stdin is not None:
            line = f"printf %s {shell_quote(base64.b64encode(stdin).decode())} | base64 -d | {line}"
        try:
            if self._client is None:
                self._client = self.hook.get_conn()
            code, out, err = self.hook.exec_ssh_client_command(
                self._client, line, get_pty=False, environment=None, timeout=self.timeout
            )
        except Exception as error:  # paramiko, socket and Airflow errors: the backend's edge
            self.close()
            raise JobBackendError(
                f"`{shell_join(argv)}` over SSH connection {self.ssh_conn_id!r} failed: "
                f"{type(error).__name__}: {error}; check the connection and the login node"
            ) from error
        return CommandResult(int(code), out, err)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a broken connection is gone either way
                client.close()


def parse_jobs_json(text: str, what: str) -> list[SlurmJob] | None:
    """The records of ``scontrol show job --json`` or ``squeue --json``; None: no such job.

    Errors in the document raise :class:`JobBackendError`, except "invalid job id".
    """
    try:
        body = json.loads(text)
    except ValueError as err:
        raise JobBackendError(f"{what}: not JSON: {text[:300]!r}") from err
    if not isinstance(body, dict):
        raise JobBackendError(f"{what}: unexpected answer {text[:300]!r}")
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    if any(_is_invalid_id(e) for e in errors):
        return None
    if errors:
        from airflow_provider_lclstream.backends.slurm_rest import format_errors

        raise JobBackendError(f"{what}: {format_errors(errors)}")
    return [normalize_job(job) for job in body.get("jobs") or [] if isinstance(job, dict)]


def _is_invalid_id(error: Mapping[str, Any]) -> bool:
    number = error.get("error_number", error.get("error_code", error.get("errno")))
    return number == _INVALID_JOB_ID or "Invalid job id" in str(error.get("description", ""))


def parse_sacct(text: str) -> list[dict[str, str]]:
    """Rows of ``sacct -n -P -o JobID,JobName,State,ExitCode,User,Submit``."""
    keys = ("job_id", "name", "state", "exit_code", "user", "submit")
    rows = [dict(zip(keys, line.split("|"), strict=False)) for line in text.splitlines() if line]
    for row in rows:  # jobcomp writes "root(0)"
        row["user"] = row.get("user", "").split("(")[0]
    return rows


class SlurmCliBackend(BaseJobBackend):
    """SLURM jobs through ``sbatch``/``scontrol``/``sacct``/``scancel``, here or over SSH.

    ``accounting``: ``"sacct"`` (slurmdbd), ``"jobcomp"`` (``sacct -c``), ``"auto"`` (sacct,
    then ``sacct -c``) or ``"none"``. ``job_defaults`` are sbatch long options for every job.
    ``bin_dir`` prefixes the tool names (``/opt/slurm/bin``).
    """

    name = "slurm_cli"

    def __init__(
        self,
        *,
        ssh_conn_id: str | None = None,
        job_defaults: Mapping[str, Any] | None = None,
        accounting: Accounting = "auto",
        bin_dir: str | None = None,
        timeout: float = 60.0,
        runner: Runner | None = None,
    ) -> None:
        self.ssh_conn_id = ssh_conn_id
        self.job_defaults = dict(job_defaults or {})
        self.accounting = accounting
        self.bin_dir = bin_dir
        self.timeout = timeout
        self._runner = runner
        self._outputs: dict[str, str] = {}
        self._scontrol_json: bool | None = None  # does this SLURM's scontrol take --json?
        self._addresses: dict[str, str] = {}  # node name -> NodeAddr

    def __repr__(self) -> str:
        return f"SlurmCliBackend(ssh_conn_id={self.ssh_conn_id!r})"

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = (
                SshRunner(self.ssh_conn_id, self.timeout)
                if self.ssh_conn_id
                else LocalRunner(self.timeout)
            )
        return self._runner

    def _tool(self, name: str) -> str:
        return f"{self.bin_dir.rstrip('/')}/{name}" if self.bin_dir else name

    def _run(self, tool: str, *args: str, stdin: bytes | None = None, **kw: Any) -> CommandResult:
        return self.runner.run([self._tool(tool), *args], stdin=stdin, **kw)

    @staticmethod
    def _check_id(job_id: str) -> str:
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise JobNotFoundError(f"{job_id!r} is not a SLURM job id (expected digits)")
        return job_id

    # -- submit -----------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        args = sbatch_args(spec, self.job_defaults)
        script = with_shebang(spec.script).encode()
        result = self._run("sbatch", *args, stdin=script, env=spec.environment)
        job_id = result.text.strip().split(";")[0]
        if result.returncode != 0 or not _JOB_ID.fullmatch(job_id):
            raise JobBackendError(
                f"sbatch of job {spec.name!r} failed (rc={result.returncode}): {result.error}"
            )
        out = next(a for a in args if a.startswith("--output=")).removeprefix("--output=")
        self._outputs[job_id] = expand_output_path(
            out, job_id, spec.name or "lclstream", self.runner.user
        )
        return job_id

    # -- state ------------------------------------------------------------------------------
    def _live(self, job_id: str) -> SlurmJob | None:
        """The job's record while slurmctld holds it, else None.

        ``scontrol show job --json`` (SLURM 23.02+); where scontrol has no ``--json``,
        ``squeue --json`` once and for all later calls.
        """
        argv: tuple[str, ...] = ("scontrol", "show", "job", "--json", job_id)
        if self._scontrol_json is False:
            argv = ("squeue", "--json", "-t", "all", "-j", job_id)
        result = self._run(*argv)
        if self._scontrol_json is None and argv[0] == "scontrol":
            self._scontrol_json = "unrecognized option" not in result.error
            if not self._scontrol_json:
                argv = ("squeue", "--json", "-t", "all", "-j", job_id)
                result = self._run(*argv)
        what = " ".join(argv)
        if result.returncode != 0 and not result.stdout.strip().startswith(b"{"):
            if "Invalid job id" in result.error:
                return None
            raise JobBackendError(f"{what} failed (rc={result.returncode}): {result.error}")
        records = parse_jobs_json(result.text, what) or []
        job = next((r for r in records if r["job_id"] == job_id), None)
        if job is not None and job["standard_output"] and job_id not in self._outputs:
            user = job["raw"].get("user_name") or self.runner.user
            self._outputs[job_id] = expand_output_path(
                job["standard_output"], job_id, job["name"], str(user)
            )
        return job

    def _sacct_modes(self) -> list[list[str]]:
        modes: dict[str, list[list[str]]] = {
            "sacct": [[]],
            "jobcomp": [["-c"]],
            "auto": [[], ["-c"]],
            "none": [],
        }
        return modes[self.accounting]

    def _sacct(self, *selection: str) -> list[dict[str, str]]:
        """sacct rows (jobs, not steps) from the first accounting source that answers."""
        fields = ("-n", "-P", "-X", "-o", "JobID,JobName,State,ExitCode,User,Submit")
        errors = []
        for mode in self._sacct_modes():
            result = self._run("sacct", *mode, *fields, *selection)
            if result.returncode == 0:
                return [r for r in parse_sacct(result.text) if _JOB_ID.fullmatch(r["job_id"])]
            errors.append(f"sacct {' '.join(mode)}: {result.error}")
        if errors and self.accounting != "auto":
            raise JobBackendError("; ".join(errors))
        return []

    def state(self, job_id: str) -> JobStatus:
        self._check_id(job_id)
        job = self._live(job_id)
        if job is not None:
            return status_from_native(job_id, job)
        rows = [r for r in self._sacct("-j", job_id) if r["job_id"] == job_id]
        if not rows:
            raise JobNotFoundError(
                f"SLURM job {job_id} is unknown to slurmctld and to accounting "
                f"({self.accounting}); it may be older than MinJobAge without slurmdbd"
            )
        row = rows[-1]
        code, sig = parse_exit_code(row.get("exit_code"))
        return job_status(job_id, row["state"], exit_code=code, signal=sig)

    # -- cancel -----------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        self._check_id(job_id)
        result = self._run("scancel", job_id)
        if result.returncode != 0 and "already completing or completed" not in result.error:
            if "Invalid job id" in result.error:
                raise JobNotFoundError(f"scancel {job_id}: {result.error}")
            raise JobBackendError(f"scancel {job_id} failed: {result.error}")

    # -- logs -------------------------------------------------------------------------------
    def log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        self._check_id(job_id)
        if job_id not in self._outputs:
            self._live(job_id)
        path = self._outputs.get(job_id)
        if not path:
            return "", max(offset, 0)
        if not self.runner.remote:
            return read_log_file(path, offset, max_bytes)
        return self.read_remote_log(path, offset, max_bytes)

    def read_remote_log(self, path: str, offset: int, max_bytes: int) -> tuple[str, int]:
        """Read a log through the runner's shell (``stat``, ``tail -c``, ``head -c``)."""
        snippet = _READ_LOG.format(path=shell_quote(path), offset=int(offset), max_bytes=max_bytes)
        result = self.runner.run(["sh", "-c", snippet])
        head, sep, data = result.stdout.partition(b"\n")
        if result.returncode != 0 or not sep or not head.strip().isdigit():
            return "", max(offset, 0)
        return decode_log(data, int(head))

    # -- nodes ------------------------------------------------------------------------------
    def node_address(self, node: str) -> str:
        """The node's ``NodeAddr`` (``scontrol show node -o``)."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", node):
            raise JobBackendError(f"{node!r} is not a SLURM node name")
        if node not in self._addresses:
            result = self._run("scontrol", "show", "node", "-o", node)
            match = re.search(r"\bNodeAddr=(\S+)", result.text)
            if result.returncode != 0 or match is None:
                raise JobBackendError(
                    f"scontrol show node {node} failed (rc={result.returncode}): {result.error}"
                )
            self._addresses[node] = match.group(1)
        return self._addresses[node]

    # -- find -------------------------------------------------------------------------------
    def find(self, name: str) -> str | None:
        """The newest job of this user under ``name``: squeue (all states), then sacct."""
        user = self.runner.user
        result = self._run("squeue", "-h", "-t", "all", "-u", user, "-n", name, "-o", "%i|%j")
        if result.returncode != 0:
            raise JobBackendError(f"squeue -n {name} failed: {result.error}")
        ids = {
            int(i)
            for i, _, n in (line.partition("|") for line in result.text.splitlines())
            if n == name and _JOB_ID.fullmatch(i)
        }
        since = ("-S", "now-30days")
        rows = self._sacct(*since, "-u", user, "--name", name)
        ids.update(int(r["job_id"]) for r in rows if r["name"] == name and r["user"] in ("", user))
        return str(max(ids)) if ids else None

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
