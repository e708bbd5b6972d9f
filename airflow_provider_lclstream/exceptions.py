"""One exception class per failure mode, so callers can tell them apart."""

from __future__ import annotations


class LCLStreamError(Exception):
    """Base class of every error raised by this package."""


class TransportError(LCLStreamError):
    """A socket could not be opened, or no peer took or sent data in time."""


class ProtocolError(LCLStreamError):
    """A message on the wire is not a data blob or an end-of-stream record we understand."""


class MissingDependencyError(LCLStreamError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{package} is not installed (needed for {purpose}); "
            f"install it with: pip install 'airflow-provider-lclstream[{extra}]'"
        )


class ConfigError(LCLStreamError, ValueError):
    """A configuration file is invalid; ``path`` names the bad value (``data_handlers[0].library``).

    ``problems`` holds every ``(path, message)`` found, the first of which is ``path``/``message``.
    """

    def __init__(self, path: str, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        self.path = path
        self.message = message
        self.problems = problems or ((path, message),)
        super().__init__(path, message)

    def __str__(self) -> str:
        lines = [f"{p}: {m}" if p else m for p, m in self.problems]
        if len(lines) == 1:
            return lines[0]
        return f"{len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines)


# --- job backends (backends/, hooks/job_backend.py, operators/submit_job.py) ---


class UnsafeNameError(LCLStreamError, ValueError):
    """A name that ends up in a shell script or job name holds characters we refuse."""


class UnknownBackendError(LCLStreamError, ValueError):
    """A job backend name that is not registered; the message lists the known ones."""


class IncompleteConnectionError(LCLStreamError, ValueError):
    """An Airflow connection lacks keys a backend needs; names all of them at once."""

    def __init__(self, conn_id: str | None, conn_type: str, missing_keys: list[str]) -> None:
        self.conn_id = conn_id
        self.conn_type = conn_type
        self.missing_keys = list(missing_keys)
        super().__init__(
            f"connection {conn_id!r} (type {conn_type}) is missing: {', '.join(missing_keys)}; "
            "set them on the connection (fields or extra JSON)"
        )


class JobBackendError(LCLStreamError):
    """A job backend could not submit, query or cancel a job (service error, bad reply)."""


class JobNotFoundError(JobBackendError, LookupError):
    """The backend does not know this job id."""


class StopJobsError(JobBackendError):
    """A teardown could not stop some jobs; ``failures`` names each one and why, ``cancelled``
    maps each role to the jobs it did cancel."""

    def __init__(self, failures: list[str], cancelled: dict[str, list[str]]) -> None:
        self.failures = list(failures)
        self.cancelled = cancelled
        super().__init__(
            f"could not stop {len(self.failures)} job(s) (cancel them by hand, or they run until "
            "their walltime):\n" + "\n".join(f"  {failure}" for failure in self.failures)
        )


class JobFailedError(LCLStreamError):
    """A job ended in a state other than completed; carries its exit code and log tail."""

    def __init__(
        self,
        job_id: str,
        state: str,
        *,
        native_state: str | None = None,
        exit_code: int | None = None,
        reason: str | None = None,
        log_tail: str = "",
        name: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.state = state
        self.native_state = native_state
        self.exit_code = exit_code
        self.reason = reason
        self.log_tail = log_tail
        label = f"job {job_id}" + (f" ({name})" if name else "")
        message = (
            f"{label} ended {state} (native state {native_state!r}, exit code {exit_code})"
            + (f": {reason}" if reason else "")
        )
        if log_tail:
            message += f"\n--- last lines of the job log ---\n{log_tail}"
        super().__init__(message)


class StatsDocumentError(LCLStreamError, ValueError):
    """A buffer's ``/stats`` answer does not match its schema (``buffer/stats.py``)."""


class BufferConfigError(LCLStreamError, ValueError):
    """A buffer option is invalid: a bad URL, transport name, size or address."""


class TransferFailedError(LCLStreamError):
    """A transfer ended incomplete, stalled, or lost its buffer; ``stats`` holds what is known."""

    def __init__(self, message: str, stats: dict[str, object]) -> None:
        self.stats = stats
        super().__init__(message)
