"""One protocol for every job backend, the normalized job status, and the backend registry.

A backend submits a :class:`~airflow_provider_lclstream.config.job.JobSpec`, reports a
:class:`JobStatus`, cancels, and reads the job log from a byte offset. Each operation exists
twice: ``submit``/``asubmit`` and so on. :class:`BaseJobBackend` derives the missing half:
a synchronous backend gets async methods that run in a worker thread, an asynchronous one
gets sync methods that run the coroutine on a private event loop.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from airflow_provider_lclstream.exceptions import UnknownBackendError

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from airflow_provider_lclstream.config.job import JobSpec

T = TypeVar("T")

#: Bytes ``log_tail`` returns per call unless told otherwise.
DEFAULT_LOG_CHUNK = 64 * 1024


class JobState(enum.StrEnum):
    """Normalized job state; ``native_state`` in :class:`JobStatus` keeps the backend's word."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"

    @property
    def is_final(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)

    @property
    def is_success(self) -> bool:
        return self is JobState.COMPLETED


@dataclass(frozen=True)
class JobStatus:
    """A job's state at one moment, as plain values (JSON round-trips with to/from_dict)."""

    job_id: str
    state: JobState
    native_state: str | None = None
    exit_code: int | None = None
    reason: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state.is_final

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        return cls(
            job_id=str(data["job_id"]),
            state=JobState(data["state"]),
            native_state=data.get("native_state"),
            exit_code=data.get("exit_code"),
            reason=data.get("reason"),
        )


@runtime_checkable
class JobBackend(Protocol):
    """What the hook, operator, sensor and trigger need from a backend."""

    name: str

    def submit(self, spec: JobSpec) -> str: ...
    def state(self, job_id: str) -> JobStatus: ...
    def cancel(self, job_id: str) -> None: ...
    def log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]: ...
    def find(self, name: str) -> str | None: ...

    async def asubmit(self, spec: JobSpec) -> str: ...
    async def astate(self, job_id: str) -> JobStatus: ...
    async def acancel(self, job_id: str) -> None: ...
    async def alog_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]: ...
    async def afind(self, name: str) -> str | None: ...
    async def aclose(self) -> None: ...


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name="lclstream-run-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class BaseJobBackend:
    """Derives the async half from the sync half (or the reverse); override one of each pair.

    ``log_tail(job_id, offset)`` returns the log text from byte ``offset`` (at most
    ``max_bytes``) and the offset to pass next time; a negative offset counts from the end,
    so ``log_tail(job_id, -4000)`` is the last 4000 bytes.
    """

    name = "base"

    # -- sync half: defaults run the async half ------------------------------------------
    def job_url(self, job_id: str) -> str | None:
        """Where a person can look at the job (the operator's "Job" link); None if nowhere."""
        return None

    def submit(self, spec: JobSpec) -> str:
        return run_sync(self.asubmit(spec))

    def state(self, job_id: str) -> JobStatus:
        return run_sync(self.astate(job_id))

    def cancel(self, job_id: str) -> None:
        run_sync(self.acancel(job_id))

    def log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        return run_sync(self.alog_tail(job_id, offset, max_bytes))

    def find(self, name: str) -> str | None:
        return run_sync(self.afind(name))

    def close(self) -> None:
        """Release clients; the default does nothing."""

    # -- async half: defaults run the sync half in a thread --------------------------------
    def _is_overridden(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(BaseJobBackend, method)

    def _check_pair(self, sync_name: str, async_name: str) -> None:
        if not (self._is_overridden(sync_name) or self._is_overridden(async_name)):
            raise NotImplementedError(
                f"{type(self).__name__} implements neither {sync_name}() nor {async_name}()"
            )

    async def asubmit(self, spec: JobSpec) -> str:
        self._check_pair("submit", "asubmit")
        return await asyncio.to_thread(self.submit, spec)

    async def astate(self, job_id: str) -> JobStatus:
        self._check_pair("state", "astate")
        return await asyncio.to_thread(self.state, job_id)

    async def acancel(self, job_id: str) -> None:
        self._check_pair("cancel", "acancel")
        await asyncio.to_thread(self.cancel, job_id)

    async def alog_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        self._check_pair("log_tail", "alog_tail")
        return await asyncio.to_thread(self.log_tail, job_id, offset, max_bytes)

    async def afind(self, name: str) -> str | None:
        self._check_pair("find", "afind")
        return await asyncio.to_thread(self.find, name)

    async def aclose(self) -> None:
        self.close()


def decode_log(data: bytes, offset: int) -> tuple[str, int]:
    """Decode log bytes read at ``offset``; an incomplete UTF-8 character at the end is left
    for the next read (the returned offset stops before it)."""
    try:
        return data.decode("utf-8"), offset + len(data)
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data" and err.start >= len(data) - 3:
            head = data[: err.start]
            return head.decode("utf-8", errors="replace"), offset + len(head)
        return data.decode("utf-8", errors="replace"), offset + len(data)


# -- registry -------------------------------------------------------------------------------

#: Backend name -> "module:Class" (imported on first use, so optional deps stay optional).
BACKENDS: dict[str, str] = {
    "local": "airflow_provider_lclstream.backends.local:LocalBackend",
    "psik": "airflow_provider_lclstream.backends.psik_backend:PsikBackend",
    "s3m": "airflow_provider_lclstream.backends.s3m:S3mBackend",
    "slurm": "airflow_provider_lclstream.backends.slurm:SlurmBackend",
    "slurm_cli": "airflow_provider_lclstream.backends.slurm_cli:SlurmCliBackend",
    "sfapi": "airflow_provider_lclstream.backends.sfapi:SfapiBackend",
}


def register_backend(name: str, target: str | type) -> None:
    """Add or replace a backend: a class, or its ``"module:Class"`` path."""
    BACKENDS[name] = target if isinstance(target, str) else f"{target.__module__}:{target.__name__}"


def backend_class(name: str) -> type:
    """The class registered under ``name``; unknown names fail listing the known ones."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise UnknownBackendError(
            f"unknown job backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}"
        ) from None
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)  # type: ignore[no-any-return]
