"""SLURM through its command-line tools: sbatch, scontrol, squeue, sacct, scancel.

The tools run on this host, or on a login node over SSH through an Airflow SSH connection
(``ssh_conn_id``; needs ``apache-airflow-providers-ssh``). The script goes to ``sbatch`` on
stdin (base64-encoded over SSH) with ``--parsable``; the spec's environment is passed through
``sbatch``'s own environment and ``--export``.

State comes from ``scontrol show job`` while slurmctld holds the job (``MinJobAge`` after it
ends), then from ``sacct``: with slurmdbd, or ``sacct -c`` (``accounting="jobcomp"``) where only
``JobCompType=jobcomp/filetxt`` records finished jobs. ``find(name)`` looks in both.
"""

from __future__ import annotations

import base64
import getpass
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
from airflow_provider_lclstream.backends.sbatch import resource_options
from airflow_provider_lclstream.backends.slurm import (
    expand_output_path,
    job_directory,
    job_status,
    output_path,
    read_log_file,
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
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JOB_ID = re.compile(r"[0-9]+")
# "Key=value" pairs of `scontrol show job -o`; a value runs to the next " Key=".
_SCONTROL_PAIR = re.compile(r"(\w[\w:/]*)=(.*?)(?=\s+\w[\w:/]*=|$)")
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
        self.hook = SSHHook(ssh_conn_id=ssh_conn_id, cmd_timeout=timeout)
        self.user = str(self.hook.username or getpass.getuser())
        self._client: Any = None

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> CommandResult:
        line = shell_join(["env", *(f"{k}={v}" for k, v in env.items()), *argv] if env else argv)
        if stdin is not None:
            line = f"printf %s {shell_quote(base64.b64encode(stdin).decode())} | base64 -d | {line}"
        if self._client is None:
            self._client = self.hook.get_conn()
        code, out, err = self.hook.exec_ssh_client_command(
            self._client, line, get_pty=False, environment=None, timeout=self.timeout
        )
        return CommandResult(int(code), out, err)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def sbatch_args(spec: JobSpec, defaults: Mapping[str, Any] | None = None) -> list[str]:
    """``sbatch`` options for a JobSpec; attributes become ``--key=value`` (``account``, ...).

    Connection ``defaults`` and ``spec.attributes`` use sbatch's long option names
    (``partition``, ``qos``, ``constraint``); ``output`` is set by us unless given.
    """
    res = spec.resources
    options: dict[str, str | None] = {
        "job-name": spec.name or "lclstream",
        "chdir": job_directory(spec, defaults),
        "output": output_path(spec, _output_alias(defaults)),
        **resource_options(res),
    }
    names = [k for k in spec.environment if _ENV_NAME.fullmatch(k)]
    bad = sorted(set(spec.environment) - set(names))
    if bad:
        raise JobBackendError(f"job {spec.name!r}: environment names {bad} are not valid")
    if spec.inherit_environment:
        options["export"] = "ALL"
    else:
        options["export"] = ",".join(names) if names else "NONE"
    for key, value in {**(defaults or {}), **spec.attributes}.items():
        key = key.replace("_", "-")
        if key in ("standard-output", "current-working-directory"):
            continue
        options[key] = None if value in (None, True, "") else str(value)
    args = ["--parsable"]
    for key, value in options.items():
        args.append(f"--{key}" if value is None else f"--{key}={value}")
    return args


def _output_alias(defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """Connection defaults with sbatch's ``output``/``chdir`` under slurmrestd's names."""
    values = dict(defaults or {})
    if "output" in values:
        values.setdefault("standard_output", values.pop("output"))
    if "chdir" in values:
        values.setdefault("current_working_directory", values.pop("chdir"))
    return values


def parse_scontrol_job(text: str) -> dict[str, str]:
    """The ``Key=value`` fields of ``scontrol show job -o`` (one line per job; the first)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return {m.group(1): m.group(2) for m in _SCONTROL_PAIR.finditer(line)}


def parse_exit_code(value: str | None) -> tuple[int | None, int | None]:
    """``"code:signal"`` -> (code, signal or None)."""
    code, _, sig = (value or "").partition(":")
    try:
        return int(code), (int(sig) or None) if sig else None
    except ValueError:
        return None, None


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
        script = spec.script if spec.script.startswith("#!") else "#!/bin/bash\n" + spec.script
        args = sbatch_args(spec, self.job_defaults)
        result = self._run("sbatch", *args, stdin=script.encode(), env=spec.environment)
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
    def _scontrol(self, job_id: str) -> dict[str, str] | None:
        result = self._run("scontrol", "show", "job", "-o", job_id)
        if result.returncode != 0:
            if "Invalid job id" in result.error:
                return None
            raise JobBackendError(f"scontrol show job {job_id} failed: {result.error}")
        fields = parse_scontrol_job(result.text)
        if fields.get("StdOut") and job_id not in self._outputs:
            self._outputs[job_id] = fields["StdOut"]
        return fields if fields.get("JobId") == job_id else None

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
        fields = self._scontrol(job_id)
        if fields is not None:
            code, sig = parse_exit_code(fields.get("ExitCode"))
            return job_status(
                job_id,
                fields.get("JobState", "UNKNOWN"),
                exit_code=code,
                signal=sig,
                reason=fields.get("Reason"),
            )
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
            self._scontrol(job_id)
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
