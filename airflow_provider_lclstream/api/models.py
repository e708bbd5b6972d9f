"""The API's documents: what a client submits and the transfer status it gets back.

Field names follow the upstream LCLStream-API where it has them (``id``, ``state``, ``count``,
``data``, ``message``, the ``TransferState`` values); ``requested_by``/``created_at`` are kept as
aliases of ``user``/``created`` so upstream clients can read our documents.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from airflow_provider_lclstream.config.loader import dump_flat, validate_streamer_config
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.exceptions import ConfigError, LCLStreamError
from airflow_provider_lclstream.transfer.urls import TRANSFER_DAG_ID

DAG_ID = TRANSFER_DAG_ID
# letters, digits, _ . @ + - and inner single spaces ("Alice Tester", as certified names people)
USER_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.@+-]| (?! )){0,63}(?<! )")
# top-level keys that mark a body as an LCLStreamer configuration (flat or sectioned)
CONFIG_KEYS = frozenset(
    {
        "lclstreamer",
        "event_source",
        "data_sources",
        "processing_pipeline",
        "data_serializer",
        "data_handlers",
        "source_identifier",
    }
)


class TransferState(StrEnum):
    """Upstream LCLStream-API states (``queued`` added: the run exists, no task started yet)."""

    QUEUED = "queued"
    PROVISIONING = "provisioning"
    READY = "ready"
    CANCELING = "canceling"
    CANCELED = "canceled"
    COMPLETED = "completed"
    FAILED = "failed"


ACTIVE_STATES = frozenset(
    {TransferState.QUEUED, TransferState.PROVISIONING, TransferState.READY, TransferState.CANCELING}
)


class TransferStatus(BaseModel):
    """One transfer as lists show it; ``url`` is where a consumer pulls data (once ready)."""

    id: str
    state: TransferState
    url: str | None = None
    transport: str | None = None
    user: str
    created: datetime
    label: str = ""
    subscription: str | None = Field(
        default=None, description="the subscription whose run start started it"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def requested_by(self) -> str:
        return self.user

    @computed_field  # type: ignore[prop-decorator]
    @property
    def created_at(self) -> datetime:
        return self.created


class LiveMetrics(BaseModel):
    """The buffer's counters (``GET <metrics_url>/stats``), summarized; events are estimated
    as messages x batch size while running, exact from the final stats."""

    buffer_state: str | None = None
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    events: int | None = None
    events_per_s: float | None = None
    mb_per_s: float = 0.0
    rates: dict[str, float] = Field(default_factory=dict)
    producers_seen: int = 0
    producers_ended: int = 0
    producers_expected: int | None = None
    error: str | None = None


class BufferView(BaseModel):
    """One buffer of a transfer (a request's ``buffers``): where consumers pull, its numbers."""

    index: int
    url: str | None = None
    metrics_url: str | None = None
    metrics: LiveMetrics | None = None


class TransferDetail(TransferStatus):
    """``GET /v1/transfers/{id}``: status, Airflow task states, live and final numbers.

    With several buffers, ``metrics`` sums theirs and ``buffers`` shows each (``final`` holds
    each one's final numbers under ``buffers`` too)."""

    dag_run_state: str | None = None
    tasks: dict[str, str | None] = Field(default_factory=dict)
    metrics: LiveMetrics | None = None
    buffers: list[BufferView] = Field(default_factory=list)
    final: dict[str, Any] | None = None
    airflow_url: str | None = None


class TransfersPublic(BaseModel):
    """``GET /v1/transfers``: upstream's list envelope."""

    count: int
    data: list[TransferStatus]


class Message(BaseModel):
    """Upstream's reply to ``DELETE``."""

    message: str


class Submission(BaseModel):
    """A validated submission: exactly what goes into the DAG run's conf (minus the user)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["request", "config"]
    document: dict[str, Any]
    label: str = ""
    batch_size: int | None = None

    def conf(self, user: str) -> dict[str, Any]:
        return {self.kind: self.document, "user": user}


class SubmissionError(LCLStreamError, ValueError):
    """A body that is neither a valid TransferRequest nor a valid streamer config.

    ``problems`` are ``(field, message)`` pairs; fields are dotted paths inside the document.
    """

    def __init__(self, kind: str, problems: list[tuple[str, str]]) -> None:
        self.kind = kind
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "body"
        ctx = err.get("ctx") or {}
        message = str(ctx["error"]) if "error" in ctx else err["msg"]
        problems.append((field, message))
    return problems


def parse_submission(body: Any) -> Submission:
    """Validate a POST body: a TransferRequest, or a streamer config (bare, or wrapped as
    ``{"config": ...}`` / upstream's ``{"parameters": ...}``), or ``{"request": ...}``."""
    if not isinstance(body, dict):
        raise SubmissionError("body", [("body", "expected a JSON object")])
    if set(body) == {"request"}:
        body = body["request"]
    elif len(body) == 1 and set(body) & {"config", "parameters"}:
        return _parse_config(next(iter(body.values())))
    elif set(body) & CONFIG_KEYS:
        return _parse_config(body)
    if not isinstance(body, dict):
        raise SubmissionError("request", [("request", "expected a JSON object")])
    try:
        request = TransferRequest.model_validate(body)
    except ValidationError as exc:
        raise SubmissionError("request", _pydantic_problems(exc)) from None
    return Submission(
        kind="request",
        document=request.model_dump(mode="json", exclude_defaults=True),
        label=request.label,
        batch_size=request.img_per_file,
    )


def _parse_config(document: Any) -> Submission:
    if not isinstance(document, dict):
        raise SubmissionError("config", [("config", "expected a mapping (the streamer config)")])
    try:
        config = validate_streamer_config(document)
    except ConfigError as err:
        raise SubmissionError("config", [(p or "config", m) for p, m in err.problems]) from None
    batch = getattr(config.processing_pipeline, "batch_size", None)
    label = "config"
    return Submission(
        kind="config",
        document=dump_flat(config),
        label=label,
        batch_size=int(batch) if isinstance(batch, int) else None,
    )


def check_user(name: str) -> str:
    """A user name as it goes into the DAG run conf: letters, digits, _ . @ + - and inner spaces.

    The name never reaches a command line or a job name (jobs are named by the run id).
    """
    if not USER_NAME.fullmatch(name):
        raise SubmissionError("user", [("user", f"{name!r} is not a usable user name")])
    return name
