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

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_lclstream.backends.base import (
    DEFAULT_LOG_CHUNK,
    BaseJobBackend,
    JobState,
    JobStatus,
    read_log_file,
)
from airflow_provider_lclstream.exceptions import (
    JobBackendError,
    JobNotFoundError,
    MissingDependencyError,
)
from airflow_provider_lclstream.protocol import SIGNATURE_HEADER, sign_body, verify_signature

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from airflow_provider_lclstream.config.job import JobSpec

T = TypeVar("T")

__all__ = ["SIGNATURE_HEADER", "PsikBackend", "sign_callback", "verify_callback_signature"]

_STATES = {
    "new": JobState.PENDING,
    "queued": JobState.PENDING,
    "active": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "canceled": JobState.CANCELLED,
}


sign_callback = sign_body
"""The ``x-hub-signature-256`` value psik sends for ``body`` (``protocol.sign_body``)."""
verify_callback_signature = verify_signature
"""True if ``header`` is ``body``'s signature (``protocol.verify_signature``)."""


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

    async def _submit(self, spec: JobSpec) -> str:
        psik_spec = spec.to_psik()
        if psik_spec.backend not in self.config.backends:
            psik_spec.backend = next(iter(self.config.backends))
        job = await self._manager().create(psik_spec)
        try:
            await job.submit()
        except Exception as err:
            raise JobBackendError(f"psik could not submit job {job.stamp}: {err}") from err
        return str(job.stamp)

    async def _state(self, job_id: str) -> JobStatus:
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

    async def _cancel(self, job_id: str) -> None:
        job = await self._job(job_id)
        if job.history and job.history[-1].state.is_final():
            return
        await job.cancel()

    async def _log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        job = await self._job(job_id)
        ndx = max((t.jobndx for t in job.history), default=0)
        path = self.prefix / job_id / "log" / f"stdout.{max(ndx, 1)}"
        return read_log_file(path, offset, max_bytes)

    async def _find(self, name: str) -> str | None:
        found = None
        async for job in self._manager().ls():  # sorted by stamp: the last match is newest
            if job.spec.name == name:
                found = str(job.stamp)
        return found

    # -- the protocol: psik's own errors (files, JSON, its backends) become JobBackendError ----
    async def _guard(self, what: str, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await coro
        except JobBackendError:
            raise
        except Exception as err:
            raise JobBackendError(
                f"psik under {self.prefix}: {what}: {type(err).__name__}: {err}"
            ) from err

    async def asubmit(self, spec: JobSpec) -> str:
        return await self._guard(f"submit job {spec.name!r}", self._submit(spec))

    async def astate(self, job_id: str) -> JobStatus:
        return await self._guard(f"state of job {job_id}", self._state(job_id))

    async def acancel(self, job_id: str) -> None:
        await self._guard(f"cancel job {job_id}", self._cancel(job_id))

    async def alog_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        return await self._guard(f"log of job {job_id}", self._log_tail(job_id, offset, max_bytes))

    async def afind(self, name: str) -> str | None:
        return await self._guard(f"find job {name!r}", self._find(name))
