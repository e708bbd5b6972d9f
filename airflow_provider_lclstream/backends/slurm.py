"""The SLURM library every SLURM-shaped backend uses, and SLURM through slurmrestd.

One owner for what ``slurm`` (slurmrestd), ``slurm_cli`` (sbatch, scontrol), ``sfapi`` (NERSC)
and ``s3m`` (OLCF) must agree on; psik's own SLURM backend goes through psik:

- **states**: a SLURM job record (slurmrestd's, ``squeue --json``'s, ``scontrol show job
  --json``'s, any API version) as one :class:`SlurmJob` (:func:`normalize_job`), and SLURM's
  words as a :class:`~.base.JobStatus` (:func:`job_status`, :func:`status_from_native`);
- **scripts**: the shebang (:func:`with_shebang`, :func:`split_shebang`), environment names
  (:func:`check_environment`), secrets (:func:`secret_value`);
- **output**: where it goes (:data:`OUTPUT_PATTERN`, :func:`output_path`,
  :func:`expand_output_path`) and reading it (:func:`read_log_file`);
- **errors**: :func:`backend_error` turns httpx's and the clients' errors into
  :class:`~..exceptions.JobBackendError` naming the service, the call and what to check;
- slurmrestd job descriptions (:func:`slurm_job_description`); sbatch options and batch
  scripts are in :mod:`.sbatch`.

:class:`SlurmBackend` (slurmrestd) writes its job's stdout and stderr to
``<directory>/slurm-<name>-%j.out`` unless the spec's attributes set ``standard_output``.
``log_tail`` reads that file when this host sees it (a shared file system); else it returns
nothing. ``find(name)`` sees the jobs slurmctld still holds (``MinJobAge`` after they end), not
the accounting database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from airflow_provider_lclstream.backends.base import (
    DEFAULT_LOG_CHUNK,
    BaseJobBackend,
    JobState,
    JobStatus,
)
from airflow_provider_lclstream.backends.base import read_log_file as _read_log_file
from airflow_provider_lclstream.exceptions import JobBackendError, JobNotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow_provider_lclstream.backends.slurm_rest import SlurmRestClient
    from airflow_provider_lclstream.config.job import JobSpec

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_DIRECTORY = "/tmp"
OUTPUT_PATTERN = "slurm-{name}-%j.out"

# -- job records and states ----------------------------------------------------------------------

BASE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)
TERMINAL_STATES = BASE_STATES - {"PENDING", "RUNNING", "SUSPENDED"}
# State flags meaning the job is not finished yet even with a terminal base state.
_UNFINISHED_FLAGS = frozenset({"COMPLETING", "REQUEUED", "REQUEUE_HOLD", "RESIZING", "STAGE_OUT"})


class SlurmJob(TypedDict):
    """One job's record, the same across API versions and tools (``raw`` keeps the original)."""

    job_id: str
    name: str
    state: str
    flags: list[str]
    done: bool
    exit_code: int | None
    signal: int | None
    reason: str
    submit_time: int | None
    start_time: int | None
    end_time: int | None
    standard_output: str
    standard_error: str
    #: the nodes the job runs on (``NodeList`` expanded; empty while pending)
    nodes: list[str]
    raw: dict[str, Any]


def number(value: Any) -> int | None:
    """An int, or the ``{"set", "infinite", "number"}`` wrapper of v0.0.39+; unset -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, Mapping):
        if value.get("infinite") or value.get("set") is False:
            return None
        return number(value.get("number"))
    return None


def exit_status(value: Any) -> tuple[int | None, int | None]:
    """``(exit code, signal)`` like sacct's ``code:signal``; signal is None when not signaled."""
    if isinstance(value, Mapping) and ("return_code" in value or "signal" in value):
        code = number(value.get("return_code"))
        signal = value.get("signal") or {}
        sig = (
            number(signal.get("id", signal.get("signal_id")))
            if isinstance(signal, Mapping)
            else None
        )
        return code, sig or None
    raw = number(value)  # a raw wait(2) status
    if raw is None:
        return None, None
    return (raw >> 8) & 0xFF, (raw & 0x7F) or None


def parse_exit_code(value: str | None) -> tuple[int | None, int | None]:
    """sacct's and squeue's ``"code:signal"`` -> (code, signal or None)."""
    code, _, sig = (value or "").partition(":")
    try:
        return int(code), (int(sig) or None) if sig else None
    except ValueError:
        return None, None


def split_state(value: Any) -> tuple[str, list[str]]:
    """``(base state, flags)`` from a ``job_state`` string or list."""
    if isinstance(value, str):
        return (value or "UNKNOWN"), []
    items = [str(v) for v in value or []]
    base = next((s for s in items if s in BASE_STATES), items[0] if items else "UNKNOWN")
    return base, [s for s in items if s != base]


def normalize_job(job: Mapping[str, Any]) -> SlurmJob:
    """One ``jobs[]`` record (slurmrestd, ``squeue --json``, ``scontrol show job --json``)."""
    state, flags = split_state(job.get("job_state"))
    code, signal = exit_status(job.get("exit_code"))
    return SlurmJob(
        job_id=str(job.get("job_id", "")),
        name=str(job.get("name") or ""),
        state=state,
        flags=flags,
        done=state in TERMINAL_STATES and not _UNFINISHED_FLAGS.intersection(flags),
        exit_code=code,
        signal=signal,
        reason=str(job.get("state_reason") or ""),
        submit_time=number(job.get("submit_time")),
        start_time=number(job.get("start_time")),
        end_time=number(job.get("end_time")),
        standard_output=str(job.get("standard_output") or ""),
        standard_error=str(job.get("standard_error") or ""),
        nodes=expand_hostlist(str(job.get("nodes") or "")),
        raw=dict(job),
    )


_HOSTLIST_ITEM = re.compile(r"([^,\[]*)(?:\[([^\]]*)\])?([^,\[]*)")


def expand_hostlist(value: str) -> list[str]:
    """SLURM's host list (``lcls-n[1-3,5],gpu7``) as names; ``""``, ``(null)`` and sacct's
    ``None assigned`` -> ``[]``."""
    value = value.strip()
    if not value or value in ("(null)", "None", "None assigned"):
        return []
    names: list[str] = []
    pos = 0
    while pos < len(value):
        match = _HOSTLIST_ITEM.match(value, pos)
        if match is None or match.end() == pos or value[match.end() : match.end() + 1] not in ",":
            raise JobBackendError(f"cannot read SLURM host list {value!r}")
        prefix, ranges, suffix = match.groups()
        if ranges is None:
            names.append(prefix + suffix)
        else:
            for part in ranges.split(","):
                low, _, high = part.partition("-")
                if not low.isdigit() or not (high or low).isdigit():
                    raise JobBackendError(f"cannot read SLURM host list {value!r}")
                width = len(low)
                for number_ in range(int(low), int(high or low) + 1):
                    names.append(f"{prefix}{number_:0{width}d}{suffix}")
        pos = match.end() + 1  # past the comma
    return names


_PENDING = {"PENDING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING", "RESV_DEL_HOLD"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
_TIMEOUT = {"TIMEOUT", "DEADLINE"}
_CANCELLED = {"CANCELLED", "REVOKED"}


def slurm_job_state(base_state: str, done: bool = True) -> JobState:
    """Normalize a SLURM base state (``FAILED``, ``NODE_FAIL``, ``OUT_OF_MEMORY`` -> failed).

    ``done=False`` (a terminal state with a flag such as ``COMPLETING``) counts as running.
    sacct's ``CANCELLED by 0`` is read as ``CANCELLED``.
    """
    state = base_state.upper().split()[0] if base_state.strip() else "UNKNOWN"
    if state in _PENDING:
        return JobState.PENDING
    if state in _RUNNING or not done:
        return JobState.RUNNING
    if state == "COMPLETED":
        return JobState.COMPLETED
    if state in _TIMEOUT:
        return JobState.TIMEOUT
    if state in _CANCELLED:
        return JobState.CANCELLED
    return JobState.FAILED


def job_status(
    job_id: str,
    base_state: str,
    *,
    flags: Iterable[str] = (),
    done: bool = True,
    exit_code: int | None = None,
    signal: int | None = None,
    reason: str | None = None,
    nodes: Iterable[str] = (),
) -> JobStatus:
    """A :class:`JobStatus` from SLURM's words; ``native_state`` is ``STATE[+FLAG...]``."""
    state = slurm_job_state(base_state, done)
    flags = list(flags)
    native = "+".join([base_state, *flags]) if flags else base_state
    why = reason if reason and reason != "None" else None
    if why is None and state.is_final and not state.is_success:
        if signal:
            why = f"killed by signal {signal}"
        elif state is JobState.FAILED and exit_code:
            why = f"exit code {exit_code}"
    return JobStatus(job_id, state, native, exit_code, why, tuple(nodes))


def status_from_native(job_id: str, native: Mapping[str, Any]) -> JobStatus:
    """The :class:`JobStatus` of a normalized record (:func:`normalize_job`)."""
    return job_status(
        job_id,
        str(native.get("state") or "UNKNOWN"),
        flags=native.get("flags") or (),
        done=bool(native.get("done", True)),
        exit_code=native.get("exit_code"),
        signal=native.get("signal"),
        reason=native.get("reason"),
        nodes=native.get("nodes") or (),
    )


def output_path(spec: JobSpec, defaults: Mapping[str, Any] | None = None) -> str:
    """The stdout file pattern of a job: attributes, connection defaults, else our default."""
    explicit = spec.attributes.get("standard_output") or (defaults or {}).get("standard_output")
    if explicit:
        return str(explicit)
    directory = job_directory(spec, defaults)
    return f"{directory.rstrip('/')}/{OUTPUT_PATTERN.format(name=spec.name or 'lclstream')}"


def job_directory(spec: JobSpec, defaults: Mapping[str, Any] | None = None) -> str:
    """The working directory: the spec's, the connection's ``current_working_directory``, /tmp."""
    return str(
        spec.directory or (defaults or {}).get("current_working_directory") or DEFAULT_DIRECTORY
    )


def slurm_job_description(
    spec: JobSpec, api_minor: int, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A slurmrestd job description from a JobSpec, in the field shapes of ``v0.0.<api_minor>``.

    ``defaults`` (from the connection) and then ``spec.attributes`` (``partition``, ``account``,
    ``qos``, ...) are merged over the computed fields. slurmrestd has no environment of its own
    to inherit: the job gets ``spec.environment`` plus a minimal ``PATH``.
    """
    res = spec.resources
    new = api_minor >= 39
    env = dict(spec.environment)
    env.setdefault("PATH", DEFAULT_PATH)
    desc: dict[str, Any] = {
        "name": spec.name or "lclstream",
        "current_working_directory": job_directory(spec, defaults),
        "standard_output": output_path(spec, defaults),
        "environment": env,
        "time_limit": {"set": True, "infinite": False, "number": res.duration}
        if new
        else res.duration,
        "cpus_per_task": res.cpu_cores_per_process,
    }
    if res.node_count:
        if new:
            desc["minimum_nodes"] = desc["maximum_nodes"] = res.node_count
        else:  # v0.0.38: nodes=[min, max]; minimum_nodes is a boolean there
            desc["nodes"] = [res.node_count, res.node_count]
    if res.process_count:
        desc["tasks"] = res.process_count
    if res.processes_per_node:
        desc["tasks_per_node"] = res.processes_per_node
    if res.gpu_cores_per_process:
        if new:
            desc["tres_per_task"] = f"gres/gpu:{res.gpu_cores_per_process}"
        else:
            desc["gpus_per_task"] = str(res.gpu_cores_per_process)
    if res.exclusive_node_use:
        desc["exclusive"] = ["true"] if new else "exclusive"  # v0.0.38 takes the sbatch word
    desc.update(defaults or {})
    desc.update(spec.attributes)
    nodelist = desc.pop("nodelist", None)  # sbatch's word; slurmrestd's is required_nodes
    if nodelist:
        if not new:
            raise JobBackendError(
                f"job {spec.name!r}: slurmrestd v0.0.{api_minor} cannot place a job on a named "
                f"node ({nodelist}): required_nodes needs v0.0.39 or later; use a newer API "
                "version, or the slurm_cli backend (sbatch --nodelist)"
            )
        desc["required_nodes"] = expand_hostlist(str(nodelist))
    return desc


def expand_output_path(pattern: str, job_id: str, name: str, user: str | None = None) -> str:
    """``%j``/``%A``/``%x``/``%u``/``%%`` of a SLURM output file pattern."""
    out = pattern.replace("%%", "\0").replace("%j", job_id).replace("%A", job_id)
    out = out.replace("%x", name)
    if user:
        out = out.replace("%u", user)
    return out.replace("\0", "%")


def read_log_file(path: str, offset: int, max_bytes: int) -> tuple[str, int]:
    """A SLURM job's output file from this host: empty where this host does not see it."""
    return _read_log_file(path, offset, max_bytes, quiet=True)


# -- scripts, secrets, errors --------------------------------------------------------------------

DEFAULT_SHEBANG = "#!/bin/bash"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_shebang(script: str) -> tuple[str, str]:
    """``(shebang line, body)``; a script without one gets ``#!/bin/bash`` (SLURM wants one)."""
    if script.startswith("#!"):
        shebang, _, body = script.partition("\n")
        return shebang, body
    return DEFAULT_SHEBANG, script


def with_shebang(script: str) -> str:
    """The script as SLURM runs it: its own shebang line, else ``#!/bin/bash`` added."""
    return script if script.startswith("#!") else f"{DEFAULT_SHEBANG}\n{script}"


def check_environment(spec: JobSpec) -> list[str]:
    """The spec's environment names; names a shell cannot export raise JobBackendError."""
    bad = sorted(k for k in spec.environment if not _ENV_NAME.fullmatch(k))
    if bad:
        raise JobBackendError(f"job {spec.name!r}: environment names {bad} are not valid")
    return list(spec.environment)


def secret_value(value: Any) -> str | None:
    """A str from a SecretStr (connection settings), a str, or None."""
    if value is None:
        return None
    return str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)


def backend_error(err: BaseException, service: str, what: str) -> JobBackendError:
    """One :class:`JobBackendError` for the ways a call to ``service`` fails.

    An error that already is one passes through; slurmrestd's "no such job" becomes
    :class:`JobNotFoundError`; HTTP answers and connection failures say what to check.
    """
    import httpx

    from airflow_provider_lclstream.backends.slurm_rest import SlurmJobNotFound, SlurmRestError

    if isinstance(err, SlurmJobNotFound):
        return JobNotFoundError(f"{service}: {what}: {err}")
    if isinstance(err, SlurmRestError):
        return JobBackendError(f"{service}: {what}: {err}")
    if isinstance(err, JobBackendError):
        return err
    if isinstance(err, httpx.HTTPStatusError):
        code = err.response.status_code
        hint = "; check the connection's credentials" if code in (401, 403) else ""
        return JobBackendError(f"{service}: {what}: HTTP {code} {err.response.text[:300]}{hint}")
    if isinstance(err, httpx.TransportError):
        where = f" {err.request.url}" if _has_request(err) else ""
        return JobBackendError(
            f"{service}: {what}: cannot reach{where}: {type(err).__name__}: {err}; check the "
            "connection's URL and that the service runs"
        )
    return JobBackendError(f"{service}: {what}: {type(err).__name__}: {err}")


def _has_request(err: Any) -> bool:
    try:
        err.request  # noqa: B018 (httpx raises RuntimeError when there is none)
    except RuntimeError:
        return False
    return True


def newest_job(records: Iterable[Mapping[str, Any]], name: str, user: str | None) -> str | None:
    """The id of the newest record named ``name`` (and owned by ``user`` when records say)."""
    best: tuple[int, int, str] | None = None
    for job in records:
        if job.get("name") != name:
            continue
        owner = (job.get("raw") or {}).get("user_name")
        if user and owner and owner != user:
            continue
        job_id = str(job.get("job_id", ""))
        if not job_id.isdigit():
            continue
        key = (int(job.get("submit_time") or 0), int(job_id), job_id)
        if best is None or key > best:
            best = key
    return best[2] if best else None


class SlurmBackend(BaseJobBackend):
    """Jobs on a SLURM cluster through slurmrestd (any API version v0.0.38 to v0.0.43).

    ``api_version=None`` uses the newest version the server answers (probed once). ``token``
    (a str or SecretStr) else ``$SLURM_JWT`` else ``scontrol token`` (see :mod:`.slurm_rest`).
    ``job_defaults`` are slurmrestd job fields for every job.

    Only the sync half is written: one httpx client, and minting a token runs ``scontrol``
    anyway. The async half is :class:`~.base.BaseJobBackend`'s, the same calls in a worker
    thread, so a trigger's event loop never waits on slurmrestd. Every error is a
    :class:`JobBackendError` naming the call (``JobNotFoundError`` for an unknown job).
    """

    name = "slurm"

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        token: Any = None,
        api_version: str | None = None,
        verify: bool | str = True,
        job_defaults: Mapping[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.api_version = api_version
        self.job_defaults = dict(job_defaults or {})
        self._client_kwargs: dict[str, Any] = {
            "user": user,
            "token": secret_value(token),
            "verify": verify,
            "timeout": timeout,
        }
        self._sync: SlurmRestClient | None = None
        self._outputs: dict[str, str] = {}  # job id -> expanded stdout path
        self._addresses: dict[str, str] = {}  # node name -> NodeAddr

    def job_url(self, job_id: str) -> str | None:
        """The job's record in slurmrestd."""
        return f"{self.url.rstrip('/')}/slurm/{self.api_version or 'v0.0.38'}/job/{job_id}"

    def __repr__(self) -> str:
        return f"SlurmBackend(url={self.url!r}, api_version={self.api_version!r})"

    # -- client and errors ------------------------------------------------------------------
    def _client(self) -> SlurmRestClient:
        if self._sync is None:
            from airflow_provider_lclstream.backends.slurm_rest import SlurmRestClient

            client = SlurmRestClient(
                self.url, api_version=self.api_version or "v0.0.38", **self._client_kwargs
            )
            if self.api_version is None:
                try:
                    self.api_version = client.detect_version()
                except Exception:
                    client.close()
                    raise
            self._sync = client
        return self._sync

    def _call(self, what: str, op: Callable[[SlurmRestClient], Any]) -> Any:
        try:
            return op(self._client())
        except Exception as err:
            raise backend_error(err, f"slurmrestd at {self.url}", what) from err

    # -- the protocol -----------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        def submit(client: SlurmRestClient) -> tuple[str, dict[str, Any]]:
            minor = int(client.api_version.rsplit(".", 1)[1])
            desc = slurm_job_description(spec, minor, self.job_defaults)
            return client.submit(with_shebang(spec.script), desc), desc

        job_id, desc = self._call(f"submit job {spec.name!r}", submit)
        user = self._sync.user if self._sync is not None else None
        self._outputs[job_id] = expand_output_path(
            str(desc["standard_output"]), job_id, str(desc["name"]), user
        )
        return str(job_id)

    def _native(self, job_id: str) -> SlurmJob:
        native: SlurmJob = self._call(f"state of job {job_id}", lambda c: c.state(job_id))
        if job_id not in self._outputs and native["standard_output"]:
            user = (native["raw"].get("user_name") or None) if native["raw"] else None
            self._outputs[job_id] = expand_output_path(
                native["standard_output"], job_id, native["name"], user
            )
        return native

    def state(self, job_id: str) -> JobStatus:
        return status_from_native(job_id, self._native(job_id))

    def cancel(self, job_id: str) -> None:
        self._call(f"cancel job {job_id}", lambda c: c.cancel(job_id))

    def log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        if job_id not in self._outputs:
            self._native(job_id)
        path = self._outputs.get(job_id)
        return read_log_file(path, offset, max_bytes) if path else ("", max(offset, 0))

    def node_address(self, node: str) -> str:
        """The node's ``NodeAddr`` from slurmrestd (its name when slurmrestd gives none)."""
        if node not in self._addresses:
            record = self._call(f"node {node}", lambda c: c.node(node))
            self._addresses[node] = str(record.get("address") or record.get("hostname") or node)
        return self._addresses[node]

    def find(self, name: str) -> str | None:
        """The newest job of this user that slurmctld still knows under ``name``."""
        records = self._call(f"find job {name!r}", lambda c: c.jobs())
        return newest_job(records, name, self._sync.user if self._sync else None)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None
