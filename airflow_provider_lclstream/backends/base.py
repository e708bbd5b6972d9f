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
import os
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from airflow_provider_lclstream.config.backends import (  # noqa: F401 (the registry, re-exported)
    BACKENDS,
    BackendInfo,
    backend_info,
    backend_names,
    register_backend,
)
from airflow_provider_lclstream.exceptions import JobBackendError

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
    #: the nodes the job runs on, as the backend names them (empty: not placed yet, or a
    #: backend that does not say); :meth:`BaseJobBackend.node_address` gives an address
    nodes: tuple[str, ...] = ()

    @property
    def is_final(self) -> bool:
        return self.state.is_final

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["nodes"] = list(self.nodes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        return cls(
            job_id=str(data["job_id"]),
            state=JobState(data["state"]),
            native_state=data.get("native_state"),
            exit_code=data.get("exit_code"),
            reason=data.get("reason"),
            nodes=tuple(str(n) for n in data.get("nodes") or ()),
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
    def node_address(self, node: str) -> str: ...

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

    def node_address(self, node: str) -> str:
        """The address other hosts reach ``node`` at (a name from :attr:`JobStatus.nodes`).

        The default is the node's name (resolved by DNS); SLURM backends ask for the node's
        ``NodeAddr``, the local backend answers 127.0.0.1 for its own host."""
        return node

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


def log_start(size: int, offset: int) -> int:
    """Where a read at ``offset`` starts in a log of ``size`` bytes (negative: from the end)."""
    return max(0, size + offset) if offset < 0 else min(offset, size)


def read_log_file(
    path: str | os.PathLike[str], offset: int, max_bytes: int, *, quiet: bool = False
) -> tuple[str, int]:
    """At most ``max_bytes`` of a log file from ``offset``, and the offset to read next.

    A missing file is an empty log. Another OSError raises :class:`JobBackendError`, or with
    ``quiet`` (a file this host may not see, such as a SLURM job's output) reads as empty too.
    """
    try:
        with open(path, "rb") as handle:
            start = log_start(os.fstat(handle.fileno()).st_size, offset)
            handle.seek(start)
            return decode_log(handle.read(max_bytes), start)
    except FileNotFoundError:
        return "", max(offset, 0)
    except OSError as err:
        if quiet:
            return "", max(offset, 0)
        raise JobBackendError(f"cannot read the job log {os.fspath(path)}: {err}") from err


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
# The table lives in config/backends.py (the request model reads it too); importing a class is
# this layer's part.


def backend_class(name: str) -> type:
    """The class registered under ``name``; unknown names fail listing the known ones."""
    module_name, _, attr = backend_info(name).target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]
