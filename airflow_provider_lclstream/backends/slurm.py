"""SLURM through slurmrestd: the job-backend protocol over :mod:`.slurm_rest`'s clients.

Also the pieces the other SLURM-shaped backends (S3M, the CLI backend) share: a JobSpec as a
slurmrestd job description, SLURM states mapped onto :class:`~.base.JobState`, output-file
patterns and log reading.

The job's stdout and stderr go to ``<directory>/slurm-<name>-%j.out`` unless the spec's
attributes set ``standard_output``. ``log_tail`` reads that file when this host sees it (a shared
file system); else it returns nothing. ``find(name)`` sees the jobs slurmctld still holds
(``MinJobAge`` after they end), not the accounting database.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.backends.base import (
    DEFAULT_LOG_CHUNK,
    BaseJobBackend,
    JobState,
    JobStatus,
    decode_log,
)
from airflow_provider_lclstream.exceptions import JobBackendError, JobNotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from airflow_provider_lclstream.backends.slurm_rest import (
        AsyncSlurmRestClient,
        SlurmRestClient,
    )
    from airflow_provider_lclstream.backends.slurm_rest import JobState as NativeJob
    from airflow_provider_lclstream.config.job import JobSpec

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_DIRECTORY = "/tmp"
OUTPUT_PATTERN = "slurm-{name}-%j.out"

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
    return JobStatus(job_id, state, native, exit_code, why)


def status_from_native(job_id: str, native: Mapping[str, Any]) -> JobStatus:
    """The :class:`JobStatus` of a normalized slurmrestd record (:func:`.normalize_job`)."""
    return job_status(
        job_id,
        str(native.get("state") or "UNKNOWN"),
        flags=native.get("flags") or (),
        done=bool(native.get("done", True)),
        exit_code=native.get("exit_code"),
        signal=native.get("signal"),
        reason=native.get("reason"),
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
    return desc


def expand_output_path(pattern: str, job_id: str, name: str, user: str | None = None) -> str:
    """``%j``/``%A``/``%x``/``%u``/``%%`` of a SLURM output file pattern."""
    out = pattern.replace("%%", "\0").replace("%j", job_id).replace("%A", job_id)
    out = out.replace("%x", name)
    if user:
        out = out.replace("%u", user)
    return out.replace("\0", "%")


def read_log_file(path: str, offset: int, max_bytes: int) -> tuple[str, int]:
    """Bytes of a log file visible from this host (shared file system), like LocalBackend."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = max(0, size + offset) if offset < 0 else min(offset, size)
            handle.seek(start)
            return decode_log(handle.read(max_bytes), start)
    except OSError:
        return "", max(offset, 0)


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


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


class SlurmBackend(BaseJobBackend):
    """Jobs on a SLURM cluster through slurmrestd (any API version v0.0.38 to v0.0.43).

    ``api_version=None`` uses the newest version the server answers (probed once per client).
    ``token`` (a str or SecretStr) else ``$SLURM_JWT`` else ``scontrol token`` (see
    :mod:`.slurm_rest`). ``job_defaults`` are slurmrestd job fields for every job.
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
            "token": _secret(token),
            "verify": verify,
            "timeout": timeout,
        }
        self._sync: SlurmRestClient | None = None
        self._async: AsyncSlurmRestClient | None = None
        self._outputs: dict[str, str] = {}  # job id -> expanded stdout path

    def job_url(self, job_id: str) -> str | None:
        """The job's record in slurmrestd."""
        return f"{self.url.rstrip('/')}/slurm/{self.api_version or 'v0.0.38'}/job/{job_id}"

    def __repr__(self) -> str:
        return f"SlurmBackend(url={self.url!r}, api_version={self.api_version!r})"

    # -- clients ----------------------------------------------------------------------------
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

    async def _aclient(self) -> AsyncSlurmRestClient:
        if self._async is None:
            from airflow_provider_lclstream.backends.slurm_rest import AsyncSlurmRestClient

            client = AsyncSlurmRestClient(
                self.url, api_version=self.api_version or "v0.0.38", **self._client_kwargs
            )
            if self.api_version is None:
                try:
                    self.api_version = await client.detect_version()
                except Exception:
                    await client.aclose()
                    raise
            self._async = client
        return self._async

    @staticmethod
    def _minor(version: str) -> int:
        return int(version.rsplit(".", 1)[1])

    @staticmethod
    def _wrap(err: Exception, what: str) -> Exception:
        from airflow_provider_lclstream.backends.slurm_rest import SlurmJobNotFound

        if isinstance(err, SlurmJobNotFound):
            return JobNotFoundError(f"SLURM job {what}: {err}")
        return JobBackendError(f"slurmrestd: {what}: {err}")

    # -- submit -----------------------------------------------------------------------------
    def _prepare(self, spec: JobSpec, version: str) -> dict[str, Any]:
        return slurm_job_description(spec, self._minor(version), self.job_defaults)

    def _submitted(self, job_id: str, desc: Mapping[str, Any], user: str) -> str:
        self._outputs[job_id] = expand_output_path(
            str(desc["standard_output"]), job_id, str(desc["name"]), user
        )
        return job_id

    @staticmethod
    def _script(spec: JobSpec) -> str:
        """SLURM wants a shebang line; a plain shell script gets ``#!/bin/bash``."""
        return spec.script if spec.script.startswith("#!") else "#!/bin/bash\n" + spec.script

    def submit(self, spec: JobSpec) -> str:
        client = self._client()
        desc = self._prepare(spec, client.api_version)
        try:
            job_id = client.submit(self._script(spec), desc)
        except Exception as err:
            raise self._wrap(err, f"submit {spec.name!r}") from err
        return self._submitted(job_id, desc, client.user)

    async def asubmit(self, spec: JobSpec) -> str:
        client = await self._aclient()
        desc = self._prepare(spec, client.api_version)
        try:
            job_id = await client.submit(self._script(spec), desc)
        except Exception as err:
            raise self._wrap(err, f"submit {spec.name!r}") from err
        return self._submitted(job_id, desc, client.user)

    # -- state ------------------------------------------------------------------------------
    def _native(self, job_id: str) -> NativeJob:
        try:
            native = self._client().state(job_id)
        except Exception as err:
            raise self._wrap(err, job_id) from err
        self._remember_output(job_id, native)
        return native

    async def _anative(self, job_id: str) -> NativeJob:
        try:
            native = await (await self._aclient()).state(job_id)
        except Exception as err:
            raise self._wrap(err, job_id) from err
        self._remember_output(job_id, native)
        return native

    def _remember_output(self, job_id: str, native: NativeJob) -> None:
        if job_id not in self._outputs and native["standard_output"]:
            user = (native["raw"].get("user_name") or None) if native["raw"] else None
            self._outputs[job_id] = expand_output_path(
                native["standard_output"], job_id, native["name"], user
            )

    def state(self, job_id: str) -> JobStatus:
        return status_from_native(job_id, self._native(job_id))

    async def astate(self, job_id: str) -> JobStatus:
        return status_from_native(job_id, await self._anative(job_id))

    # -- cancel -----------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        try:
            self._client().cancel(job_id)
        except Exception as err:
            raise self._wrap(err, f"cancel {job_id}") from err

    async def acancel(self, job_id: str) -> None:
        try:
            await (await self._aclient()).cancel(job_id)
        except Exception as err:
            raise self._wrap(err, f"cancel {job_id}") from err

    # -- logs -------------------------------------------------------------------------------
    def log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        if job_id not in self._outputs:
            self._native(job_id)
        path = self._outputs.get(job_id)
        return read_log_file(path, offset, max_bytes) if path else ("", max(offset, 0))

    async def alog_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        if job_id not in self._outputs:
            await self._anative(job_id)
        path = self._outputs.get(job_id)
        return read_log_file(path, offset, max_bytes) if path else ("", max(offset, 0))

    # -- find -------------------------------------------------------------------------------
    def find(self, name: str) -> str | None:
        """The newest job of this user that slurmctld still knows under ``name``."""
        client = self._client()
        try:
            records = client.jobs()
        except Exception as err:
            raise self._wrap(err, "list jobs") from err
        return newest_job(records, name, client.user)

    async def afind(self, name: str) -> str | None:
        client = await self._aclient()
        try:
            records = await client.jobs()
        except Exception as err:
            raise self._wrap(err, "list jobs") from err
        return newest_job(records, name, client.user)

    # -- close ------------------------------------------------------------------------------
    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            await self._async.aclose()
            self._async = None
