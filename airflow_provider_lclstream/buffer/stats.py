"""The ``stats()`` document and the rates in it."""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_lclstream.buffer.core import Buffer

RATE_WINDOW_S = 5.0
KEYS = ("messages_in", "bytes_in", "messages_out", "bytes_out")


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


def build_stats(buffer: Buffer) -> dict[str, Any]:
    """Everything ``/stats`` shows; the caller holds the buffer's lock."""
    cfg = buffer.config
    state = buffer.state if buffer.state != "starting" else "running"
    return {
        "name": buffer.name,
        "state": state,
        "phase": buffer.phase,
        "stream": buffer.jobndx,
        "stream_id": buffer.stream_id,
        "streams_finished": buffer.streams_finished,
        **buffer.counts,
        "stream_messages_out": buffer.stream_out[0],
        "stream_bytes_out": buffer.stream_out[1],
        "stream_first_data_at": buffer.stream_first_data_at,
        "stream_finished_at": buffer.stream_finished_at,
        "buffered_messages": len(buffer.fifo),
        "buffered_bytes": buffer.fifo.bytes,
        "peak_buffered_bytes": buffer.fifo.peak_bytes,
        "peak_buffered_messages": buffer.fifo.peak_messages,
        "capacity_bytes": cfg.capacity_bytes,
        "capacity_messages": cfg.capacity_messages,
        "dropped_messages": buffer.dropped[0],
        "dropped_bytes": buffer.dropped[1],
        "corrupt_eos": buffer.corrupt_eos,
        "eos_sent": buffer.eos_sent,
        "rates": buffer.rates.rates(buffer.counts),
        "producers": buffer.acct.snapshot(),
        "consumers": buffer.consumers.snapshot(),
        "input": {"url": cfg.input, "transport": cfg.input_transport},
        "output": {"url": cfg.output, "transport": cfg.output_transport},
        "metrics_port": buffer.metrics_port,
    }


def progress_line(s: dict[str, Any]) -> str:
    """The periodic one-line log summary of ``stats()``."""
    prod, rates = s["producers"], s["rates"]
    return (
        f"{s['state']} | in {s['messages_in']} msgs {rates['bytes_in'] / 1e6:.1f} MB/s"
        f" | out {s['messages_out']} msgs {rates['bytes_out'] / 1e6:.1f} MB/s"
        f" | held {s['buffered_messages']} msgs {s['buffered_bytes'] / 1e6:.1f} MB"
        f" | producers ended {prod['ended']}/{prod['expected'] or '?'} seen {prod['seen']}"
        f" | consumers {s['consumers']['connected']}"
    )
