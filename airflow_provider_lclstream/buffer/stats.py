"""The buffer's ``/stats`` document: its schema, how the buffer fills it, and its rates.

``BufferStats`` is the one owner of the document: the buffer builds it (``build_stats``) and
every reader (the transfer trigger, the API's live metrics, ``transfer/stats.py``) parses the
JSON with ``parse_stats``. Readers keep keys they do not know, so an older reader can watch a
newer buffer; counters a reader may not get (an older buffer, a test double) default to zero.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airflow_provider_lclstream.exceptions import StatsDocumentError

if TYPE_CHECKING:
    from airflow_provider_lclstream.buffer.core import Buffer

RATE_WINDOW_S = 5.0
KEYS = ("messages_in", "bytes_in", "messages_out", "bytes_out")

BufferState = Literal["running", "draining", "done", "failed"]
"""``running`` (also while starting), ``draining`` (input over, FIFO emptying), ``done`` and
``failed`` (the last stream's outcome)."""
STATES: tuple[str, ...] = ("running", "draining", "done", "failed")


class _Part(BaseModel):
    # Unknown keys are kept, not refused: an older reader still parses a newer buffer's
    # document, and nothing the buffer adds is lost on the way (a test checks that everything a
    # real buffer writes is in the schema).
    model_config = ConfigDict(extra="allow", frozen=True)


class Rates(_Part):
    """Per-second rates over the last few seconds."""

    messages_in: float = 0.0
    bytes_in: float = 0.0
    messages_out: float = 0.0
    bytes_out: float = 0.0


class ProducerEnd(_Part):
    """One producer's own counts, from its end-of-stream record."""

    rank: int | None = None
    messages: int = 0
    bytes: int = 0
    events: int = 0
    batches: int = 0
    skipped: int = 0


class Producers(_Part):
    """The producers of the current stream."""

    expected: int | None = None
    seen: int = 0
    ended: int = 0
    names: list[str] = Field(default_factory=list)
    connected: int = 0
    vanished: list[str] = Field(default_factory=list)
    missing_ranks: list[int] = Field(default_factory=list)
    duplicate_eos: int = 0
    per_producer: dict[str, ProducerEnd] = Field(default_factory=dict)


class ConsumerInfo(_Part):
    key: str
    address: str = ""
    connected_at: float | None = None
    disconnected_at: float | None = None
    sent_estimate: float = 0.0
    """Messages handed to it, estimated (PUSH does not say which peer took one)."""
    lost_mid_stream: bool = False


class Consumers(_Part):
    connected: int = 0
    lost: int = 0
    live: list[ConsumerInfo] = Field(default_factory=list)
    gone: list[ConsumerInfo] = Field(default_factory=list)


class EndpointInfo(_Part):
    url: str
    transport: str


class StreamSnapshot(_Part):
    """The buffer's counters at one moment (totals since start, ``stream_*`` this stream)."""

    name: str = ""
    state: BufferState
    phase: str = ""
    stream: int = 0
    stream_id: str = ""
    streams_finished: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    stream_messages_out: int | None = None
    stream_bytes_out: int | None = None
    stream_first_data_at: float | None = None
    stream_finished_at: float | None = None
    buffered_messages: int = 0
    buffered_bytes: int = 0
    peak_buffered_bytes: int = 0
    peak_buffered_messages: int = 0
    capacity_bytes: int = 0
    capacity_messages: int = 0
    dropped_messages: int = 0
    dropped_bytes: int = 0
    corrupt_eos: int = 0
    eos_sent: int = 0
    rates: Rates = Field(default_factory=Rates)
    producers: Producers = Field(default_factory=Producers)
    consumers: Consumers = Field(default_factory=Consumers)
    input: EndpointInfo | None = None
    output: EndpointInfo | None = None
    metrics_port: int | None = None


class StreamReport(StreamSnapshot):
    """The final report of a finished stream: the snapshot at its end and what went wrong."""

    problems: list[str] = Field(default_factory=list)
    reason: str = ""
    eos: bool = False
    """True when every expected producer sent its end-of-stream record."""


class BufferStats(StreamSnapshot):
    """``GET /stats``: the live counters and the last finished stream's report."""

    last_stream: StreamReport | None = None

    def stream_finished(self) -> bool:
        """True once the buffer has finished (at least) one stream and kept its report."""
        return self.last_stream is not None and self.streams_finished >= 1


def parse_stats(data: Any, source: str = "/stats") -> BufferStats:
    """Validate a ``/stats`` JSON document; ``StatsDocumentError`` says what is wrong where."""
    try:
        return BufferStats.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}"
            for e in err.errors(include_url=False)
        )
        raise StatsDocumentError(
            f"{source} is not a buffer stats document ({problems}); is it an lclstream-buffer's "
            "metrics URL?"
        ) from None


class RateMeter:
    """Per-second rates over the last ``RATE_WINDOW_S`` seconds, sampled about once a second."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, dict[str, int]]] = deque()

    def sample(self, counts: dict[str, int]) -> None:
        now = time.monotonic()
        if not self.samples or now - self.samples[-1][0] >= 1.0:
            self.samples.append((now, dict(counts)))
            while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW_S:
                self.samples.popleft()

    def rates(self, counts: dict[str, int]) -> dict[str, float]:
        if not self.samples:
            return {k: 0.0 for k in KEYS}
        t0, c0 = self.samples[0]
        dt = max(time.monotonic() - t0, 1e-3)
        return {k: round((counts[k] - c0[k]) / dt, 1) for k in KEYS}


def build_stats(buffer: Buffer) -> StreamSnapshot:
    """Everything ``/stats`` shows but ``last_stream``; the caller holds the buffer's lock."""
    cfg = buffer.config
    state = buffer.state if buffer.state != "starting" else "running"
    return StreamSnapshot(
        name=buffer.name,
        state=state,  # type: ignore[arg-type]
        phase=buffer.phase,
        stream=buffer.jobndx,
        stream_id=buffer.stream_id,
        streams_finished=buffer.streams_finished,
        **buffer.counts,
        stream_messages_out=buffer.stream_out[0],
        stream_bytes_out=buffer.stream_out[1],
        stream_first_data_at=buffer.stream_first_data_at,
        stream_finished_at=buffer.stream_finished_at,
        buffered_messages=len(buffer.fifo),
        buffered_bytes=buffer.fifo.bytes,
        peak_buffered_bytes=buffer.fifo.peak_bytes,
        peak_buffered_messages=buffer.fifo.peak_messages,
        capacity_bytes=cfg.capacity_bytes,
        capacity_messages=cfg.capacity_messages,
        dropped_messages=buffer.dropped[0],
        dropped_bytes=buffer.dropped[1],
        corrupt_eos=buffer.corrupt_eos,
        eos_sent=buffer.eos_sent,
        rates=Rates(**buffer.rates.rates(buffer.counts)),
        producers=Producers.model_validate(buffer.acct.snapshot()),
        consumers=Consumers.model_validate(buffer.consumers.snapshot()),
        input=EndpointInfo(url=cfg.input, transport=cfg.input_transport),
        output=EndpointInfo(url=cfg.output, transport=cfg.output_transport),
        metrics_port=buffer.metrics_port,
    )


def progress_line(s: StreamSnapshot) -> str:
    """The periodic one-line log summary of the stats."""
    prod, rates = s.producers, s.rates
    return (
        f"{s.state} | in {s.messages_in} msgs {rates.bytes_in / 1e6:.1f} MB/s"
        f" | out {s.messages_out} msgs {rates.bytes_out / 1e6:.1f} MB/s"
        f" | held {s.buffered_messages} msgs {s.buffered_bytes / 1e6:.1f} MB"
        f" | producers ended {prod.ended}/{prod.expected or '?'} seen {prod.seen}"
        f" | consumers {s.consumers.connected}"
    )
