"""psik's job manager (psik 3.x) as a job backend, and psik callback signatures.

A job is a psik job directory under the configured prefix; its id is psik's stamp (the
directory name, e.g. ``1732420000.123``). psik records every transition in ``status.csv``;
the last one gives the state, and a ``failed`` transition carries the exit code as its info.
``log_tail`` reads the job's stdout (``log/stdout.N`` of the newest attempt N).

psik POSTs each transition to ``JobSpec.callback`` signed with ``cb_secret`` like GitHub
webhooks: header ``x-hub-signature-256: sha256=<hex HMAC-SHA256 of the body>``; check it with
:func:`verify_callback_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.backends.base import (
    DEFAULT_LOG_CHUNK,
    BaseJobBackend,
    JobState,
    JobStatus,
    decode_log,
)
from airflow_provider_lclstream.exceptions import (
    JobBackendError,
    JobNotFoundError,
    MissingDependencyError,
)

if TYPE_CHECKING:
    from airflow_provider_lclstream.config.job import JobSpec

SIGNATURE_HEADER = "x-hub-signature-256"

_STATES = {
    "new": JobState.PENDING,
    "queued": JobState.PENDING,
    "active": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "canceled": JobState.CANCELLED,
}


def sign_callback(body: bytes | str, secret: str) -> str:
    """The ``x-hub-signature-256`` value psik sends for ``body``."""
    data = body.encode() if isinstance(body, str) else body
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def verify_callback_signature(body: bytes | str, secret: str, header: str | None) -> bool:
    """True if ``header`` is the HMAC-SHA256 signature of ``body`` (constant-time compare)."""
    if not header:
        return False
    return hmac.compare_digest(sign_callback(body, secret), header.strip())


def _psik() -> Any:
    try:
        import psik
    except ImportError as err:
        raise MissingDependencyError("psik", "psik", "the psik job backend") from err
    return psik


class PsikBackend(BaseJobBackend):
    """Jobs managed by psik under ``prefix`` (or the prefix of a psik.json ``config``)."""

    name = "psik"

    def __init__(
        self, prefix: str | None = None, config: str | None = None, backend_type: str = "local"
    ) -> None:
        psik = _psik()
        if config:
            from psik.config import load_config

            self.config = load_config(config)
        elif prefix:
            self.config = psik.Config(
                prefix=Path(prefix).expanduser(),
                backends={"default": psik.BackendConfig(type=backend_type)},
            )
        else:
            raise ValueError("the psik backend needs a job prefix directory or a psik.json path")
        Path(self.config.prefix).mkdir(parents=True, exist_ok=True)
        self.prefix = Path(self.config.prefix).resolve()

    def __repr__(self) -> str:
        return f"PsikBackend(prefix={str(self.prefix)!r})"

    def _manager(self) -> Any:
        return _psik().JobManager(self.config)

    async def _job(self, job_id: str) -> Any:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise JobNotFoundError(f"{job_id!r} is not a psik job id")
        base = self.prefix / job_id
        if not (base / "spec.json").is_file():
            raise JobNotFoundError(f"no psik job {job_id!r} under {self.prefix}")
        return await _psik().Job(base)

    async def asubmit(self, spec: JobSpec) -> str:
        psik_spec = spec.to_psik()
        if psik_spec.backend not in self.config.backends:
            psik_spec.backend = next(iter(self.config.backends))
        job = await self._manager().create(psik_spec)
        try:
            await job.submit()
        except Exception as err:
            raise JobBackendError(f"psik could not submit job {job.stamp}: {err}") from err
        return str(job.stamp)

    async def astate(self, job_id: str) -> JobStatus:
        job = await self._job(job_id)
        if not job.history:
            return JobStatus(job_id, JobState.PENDING, "new")
        last = job.history[-1]
        native = last.state.value
        state = _STATES.get(native, JobState.FAILED)
        code: int | None = None
        reason = None
        if native == "completed":
            code = 0
        elif native == "failed":
            try:
                code = int(last.info)
            except ValueError:
                reason = last.info
        return JobStatus(job_id, state, native, code, reason)

    async def acancel(self, job_id: str) -> None:
        job = await self._job(job_id)
        if job.history and job.history[-1].state.is_final():
            return
        await job.cancel()

    async def alog_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        job = await self._job(job_id)
        ndx = max((t.jobndx for t in job.history), default=0)
        path = self.prefix / job_id / "log" / f"stdout.{max(ndx, 1)}"
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                start = max(0, size + offset) if offset < 0 else min(offset, size)
                handle.seek(start)
                return decode_log(handle.read(max_bytes), start)
        except FileNotFoundError:
            return "", max(offset, 0)

    async def afind(self, name: str) -> str | None:
        found = None
        async for job in self._manager().ls():  # sorted by stamp: the last match is newest
            if job.spec.name == name:
                found = str(job.stamp)
        return found
