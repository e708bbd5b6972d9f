"""Read a buffer's ``/stats`` and turn its final report into a transfer's numbers.

The ``/stats`` document's schema is :class:`~airflow_provider_lclstream.buffer.stats.BufferStats`
(the buffer writes it); :class:`TransferSummary` is the schema of what a watch returns (the
trigger's event, ``watch_transfer``'s XCom).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_provider_lclstream.buffer.stats import BufferStats, StreamReport, parse_stats

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BufferStats",
    "RankCounts",
    "TransferSummary",
    "combine_summaries",
    "final_stats",
    "parse_stats",
    "progress",
    "stream_finished",
    "summarize_report",
]


class RankCounts(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    events: int | None = None
    messages: int | None = None


class TransferSummary(BaseModel):
    """A finished transfer's numbers, from the buffer's report of the stream."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ok: bool
    events: int = 0
    messages: int = 0
    bytes: int = 0
    mb_per_s: float = 0.0
    duration_s: float = 0.0
    """From the first data message the buffer received to the end of the stream."""
    per_rank: dict[str, RankCounts] = Field(default_factory=dict)
    producers_ended: int = 0
    producers_expected: int | None = None
    skipped: int = 0
    lost: int = 0
    """Messages the buffer left undelivered."""
    problems: list[str] = Field(default_factory=list)
    buffers: list[TransferSummary] = Field(default_factory=list)
    """Each buffer's own numbers, in order, when the transfer had several (empty with one)."""


def combine_summaries(summaries: list[TransferSummary]) -> TransferSummary:
    """One transfer's numbers from its buffers' (each fed by its share of the ranks): counts
    summed, ranks merged, MB/s over the longest stream; ``buffers`` keeps each one."""
    if len(summaries) == 1:
        return summaries[0]
    total_bytes = sum(s.bytes for s in summaries)
    duration_s = max(s.duration_s for s in summaries)
    expected = [s.producers_expected for s in summaries]
    return TransferSummary(
        ok=all(s.ok for s in summaries),
        events=sum(s.events for s in summaries),
        messages=sum(s.messages for s in summaries),
        bytes=total_bytes,
        mb_per_s=round(total_bytes / max(duration_s, 1e-9) / 1e6, 3),
        duration_s=duration_s,
        per_rank={rank: c for s in summaries for rank, c in s.per_rank.items()},
        producers_ended=sum(s.producers_ended for s in summaries),
        producers_expected=None if None in expected else sum(e or 0 for e in expected),
        skipped=sum(s.skipped for s in summaries),
        lost=sum(s.lost for s in summaries),
        problems=[f"buffer {i}: {p}" for i, s in enumerate(summaries) for p in s.problems],
        buffers=list(summaries),
    )


def _as_stats(stats: BufferStats | Mapping[str, Any]) -> BufferStats:
    return stats if isinstance(stats, BufferStats) else parse_stats(stats)


def stream_finished(stats: BufferStats | Mapping[str, Any]) -> bool:
    """True once the buffer has finished (at least) one stream and kept its report."""
    return _as_stats(stats).stream_finished()


def progress(stats: BufferStats | Mapping[str, Any]) -> tuple[int, int]:
    """What changes while data flows: (messages in, messages out)."""
    s = _as_stats(stats)
    return s.messages_in, s.messages_out


def summarize_report(report: StreamReport | Mapping[str, Any]) -> TransferSummary:
    """The transfer's numbers from the buffer's final report (its ``last_stream``)."""
    r = report if isinstance(report, StreamReport) else StreamReport.model_validate(report)
    first, finished = r.stream_first_data_at, r.stream_finished_at
    duration_s = float(finished - first) if first is not None and finished is not None else 0.0
    ended = r.producers.per_producer.values()
    bytes_out = r.stream_bytes_out if r.stream_bytes_out is not None else r.bytes_out
    messages = r.stream_messages_out if r.stream_messages_out is not None else r.messages_out
    return TransferSummary(
        ok=r.state == "done",
        events=sum(p.events for p in ended),
        messages=messages,
        bytes=bytes_out,
        mb_per_s=round(bytes_out / max(duration_s, 1e-9) / 1e6, 3),
        duration_s=round(duration_s, 3),
        per_rank={str(p.rank): RankCounts(events=p.events, messages=p.messages) for p in ended},
        producers_ended=r.producers.ended,
        producers_expected=r.producers.expected,
        skipped=sum(p.skipped for p in ended),
        lost=r.dropped_messages,
        problems=list(r.problems),
    )


def final_stats(report: StreamReport | Mapping[str, Any]) -> dict[str, Any]:
    """:func:`summarize_report` as JSON values (a trigger event, an XCom)."""
    return summarize_report(report).model_dump(mode="json")
