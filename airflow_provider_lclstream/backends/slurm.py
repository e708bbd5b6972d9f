"""SLURM through slurmrestd: the job-backend protocol over :mod:`.slurm_rest`'s clients.

Also the pieces the other SLURM-shaped backends (S3M) share: a JobSpec as a slurmrestd job
description, and SLURM states mapped onto :class:`~.base.JobState`.
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
    from collections.abc import Mapping

    from airflow_provider_lclstream.config.job import JobSpec

_PENDING = {"PENDING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING", "RESV_DEL_HOLD"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
_TIMEOUT = {"TIMEOUT", "DEADLINE"}
_CANCELLED = {"CANCELLED", "REVOKED"}


def slurm_job_state(base_state: str, done: bool = True) -> JobState:
    """Normalize a SLURM base state (``FAILED``, ``NODE_FAIL``, ``OUT_OF_MEMORY`` -> failed)."""
    state = base_state.upper().split()[0] if base_state else "UNKNOWN"
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


def slurm_job_description(
    spec: JobSpec, api_minor: int, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A slurmrestd job description from a JobSpec (v0.0.38+ field names).

    ``defaults`` (from the connection) and then ``spec.attributes`` (``partition``, ``account``,
    ``qos``, ...) are merged over the computed fields.
    """
    res = spec.resources
    minutes: Any = res.duration if api_minor < 39 else {"set": True, "number": res.duration}
    env = dict(spec.environment)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    desc: dict[str, Any] = {
        "name": spec.name or "lclstream",
        "current_working_directory": spec.directory or "/tmp",
        "environment": env,
        "time_limit": minutes,
        "cpus_per_task": res.cpu_cores_per_process,
    }
    if res.node_count:
        desc["minimum_nodes"] = res.node_count
        desc["maximum_nodes"] = res.node_count
    if res.process_count:
        desc["tasks"] = res.process_count
    if res.processes_per_node:
        desc["tasks_per_node"] = res.processes_per_node
    if res.gpu_cores_per_process:
        desc["tres_per_task"] = f"gres/gpu:{res.gpu_cores_per_process}"
    desc.update(defaults or {})
    desc.update(spec.attributes)
    return desc


def expand_output_path(pattern: str, job_id: str, name: str) -> str:
    """``%j``/``%A``/``%x``/``%%`` of a SLURM output file pattern."""
    out = pattern.replace("%%", "\0").replace("%j", job_id).replace("%A", job_id)
    return out.replace("%x", name).replace("\0", "%")


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


class SlurmBackend(BaseJobBackend):
    """Jobs on a SLURM cluster through slurmrestd. Logs are read only when the job's output
    file is visible on this host (a shared file system); else ``log_tail`` returns nothing."""

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
    ) -> None:
        secret = token.get_secret_value() if hasattr(token, "get_secret_value") else token
        self._client_kwargs: dict[str, Any] = {"user": user, "token": secret, "verify": verify}
        if api_version:
            self._client_kwargs["api_version"] = api_version
        self.url = url
        self.job_defaults = dict(job_defaults or {})
        self._sync: Any = None
        self._async: Any = None

    def __repr__(self) -> str:
        return f"SlurmBackend(url={self.url!r})"

    def _client(self) -> Any:
        if self._sync is None:
            from airflow_provider_lclstream.backends.slurm_rest import SlurmRestClient

            self._sync = SlurmRestClient(self.url, **self._client_kwargs)
        return self._sync

    def _aclient(self) -> Any:
        if self._async is None:
            from airflow_provider_lclstream.backends.slurm_rest import AsyncSlurmRestClient

            self._async = AsyncSlurmRestClient(self.url, **self._client_kwargs)
        return self._async

    @staticmethod
    def _status(job_id: str, native: Mapping[str, Any]) -> JobStatus:
        base = str(native.get("state") or "UNKNOWN")
        flags = native.get("flags") or []
        state = slurm_job_state(base, bool(native.get("done", True)))
        signal = native.get("signal")
        reason = native.get("reason") or (f"signal {signal}" if signal else None)
        label = "+".join([base, *flags]) if flags else base
        return JobStatus(job_id, state, label, native.get("exit_code"), reason or None)

    def _minor(self, client: Any) -> int:
        return int(str(client.api_version).rsplit(".", 1)[1])

    def submit(self, spec: JobSpec) -> str:
        client = self._client()
        desc = slurm_job_description(spec, self._minor(client), self.job_defaults)
        return str(client.submit(spec.script, desc))

    async def asubmit(self, spec: JobSpec) -> str:
        client = self._aclient()
        desc = slurm_job_description(spec, self._minor(client), self.job_defaults)
        return str(await client.submit(spec.script, desc))

    def _native(self, job_id: str) -> Any:
        from airflow_provider_lclstream.backends.slurm_rest import SlurmJobNotFound

        try:
            return self._client().state(job_id)
        except SlurmJobNotFound as err:
            raise JobNotFoundError(f"SLURM job {job_id}: {err}") from err

    async def _anative(self, job_id: str) -> Any:
        from airflow_provider_lclstream.backends.slurm_rest import SlurmJobNotFound

        try:
            return await self._aclient().state(job_id)
        except SlurmJobNotFound as err:
            raise JobNotFoundError(f"SLURM job {job_id}: {err}") from err

    def state(self, job_id: str) -> JobStatus:
        return self._status(job_id, self._native(job_id))

    async def astate(self, job_id: str) -> JobStatus:
        return self._status(job_id, await self._anative(job_id))

    def cancel(self, job_id: str) -> None:
        self._client().cancel(job_id)

    async def acancel(self, job_id: str) -> None:
        await self._aclient().cancel(job_id)

    def log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        native = self._native(job_id)
        path = expand_output_path(native.get("standard_output") or "", job_id, native["name"])
        return read_log_file(path, offset, max_bytes) if path else ("", max(offset, 0))

    async def alog_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        native = await self._anative(job_id)
        path = expand_output_path(native.get("standard_output") or "", job_id, native["name"])
        return read_log_file(path, offset, max_bytes) if path else ("", max(offset, 0))

    def find(self, name: str) -> str | None:
        """The newest job slurmctld still knows under ``name`` (``GET .../jobs``)."""
        from airflow_provider_lclstream.backends.slurm_rest import normalize_job

        client = self._client()
        body = client._body(client._request("GET", "jobs"), "job list")
        if body.get("errors"):
            raise JobBackendError(f"listing SLURM jobs failed: {body['errors']}")
        ids = [
            int(job["job_id"])
            for job in map(normalize_job, body.get("jobs") or [])
            if job["name"] == name and str(job["job_id"]).isdigit()
        ]
        return str(max(ids)) if ids else None

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            await self._async.aclose()
            self._async = None
