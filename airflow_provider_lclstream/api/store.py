"""Where transfers live: the ``TransferStore`` interface and the pure state rules.

A transfer is one run of the ``lclstream_transfer`` DAG. The API only talks to a store
(create/list/get/cancel), so it runs over Airflow's models inside the API server
(:mod:`airflow_provider_lclstream.api.airflow_store`) and over a fake in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_lclstream.api.models import TransferState
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.transfer.layout import (  # the DAG's tasks, defined once
    BUFFERS,
    METRICS_URL,
    OUTPUT_URL,
    RUN_STREAMER,
    START_BUFFER,
    STOP_JOBS,
    TASK_IDS,
    WATCH_TRANSFER,
)

if TYPE_CHECKING:
    import builtins
    from datetime import datetime

    from airflow_provider_lclstream.api.models import Submission

# callers import the task ids from here too
__all__ = ["RUN_STREAMER", "START_BUFFER", "STOP_JOBS", "TASK_IDS", "WATCH_TRANSFER"]
CANCEL_NOTE = "canceled by "


class TransferNotFound(LCLStreamError, LookupError):
    """No transfer with this id."""


class TransferFinished(LCLStreamError, RuntimeError):
    """The transfer already ended; there is nothing to cancel."""


@dataclass
class TransferRecord:
    """What a store knows about one transfer (the DAG run, its tasks and XComs)."""

    id: str
    user: str
    created: datetime
    dag_run_state: str
    tasks: dict[str, str | None] = field(default_factory=dict)
    buffer: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    note: str | None = None
    kind: str = "request"
    label: str = ""
    batch_size: int | None = None
    transport: str | None = None
    subscription: str | None = None

    @property
    def canceled(self) -> bool:
        return bool(self.note and self.note.startswith(CANCEL_NOTE))

    @property
    def state(self) -> TransferState:
        return derive_state(self.dag_run_state, self.tasks, canceled=self.canceled)

    @property
    def url(self) -> str | None:
        return (self.buffer or {}).get(OUTPUT_URL)

    @property
    def metrics_url(self) -> str | None:
        return (self.buffer or {}).get(METRICS_URL)

    @property
    def buffers(self) -> builtins.list[dict[str, Any]]:
        """Every buffer of the transfer (``start_buffer``'s result lists several), in order."""
        if not self.buffer:
            return []
        several = self.buffer.get(BUFFERS)
        return list(several) if isinstance(several, list) else [{"index": 0, **self.buffer}]


def derive_state(
    dag_run_state: str, tasks: dict[str, str | None], *, canceled: bool = False
) -> TransferState:
    """Upstream's transfer state from the DAG run state and its task states."""
    if canceled:  # the run stays open while the teardown cancels the jobs
        if dag_run_state in ("queued", "running"):
            return TransferState.CANCELING
        return TransferState.CANCELED
    if dag_run_state == "success":
        return TransferState.COMPLETED
    if dag_run_state == "failed":
        return TransferState.FAILED
    if dag_run_state == "queued" and all(s in (None, "none") for s in tasks.values()):
        return TransferState.QUEUED
    if tasks.get(START_BUFFER) == "success":
        return TransferState.READY
    return TransferState.PROVISIONING


def transport_of(conf: dict[str, Any]) -> str | None:
    """The data transport (zmq/nng) a consumer of this transfer must use."""
    if "request" in conf and isinstance(conf["request"], dict):
        return str(conf["request"].get("library", "zmq"))
    handlers = (conf.get("config") or {}).get("data_handlers") or []
    for handler in handlers:
        if isinstance(handler, dict) and handler.get("library"):
            return str(handler["library"])
    return None


class TransferStore(Protocol):
    """Create, list, read and cancel transfers (DAG runs of ``lclstream_transfer``)."""

    def create(self, submission: Submission, user: str) -> TransferRecord: ...

    def list(
        self, *, user: str | None = None, state: TransferState | None = None, limit: int = 100
    ) -> builtins.list[TransferRecord]:
        """Newest first; ``user=None`` lists everyone's."""
        ...

    def get(self, transfer_id: str) -> TransferRecord:
        """Raises :class:`TransferNotFound`."""
        ...

    def cancel(self, transfer_id: str, by: str) -> TransferRecord:
        """Stop a transfer so that its teardown cancels the jobs; raises TransferFinished."""
        ...
