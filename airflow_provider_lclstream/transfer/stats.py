"""Read a buffer's ``/stats`` and turn its final report into a transfer's numbers."""

from __future__ import annotations

from typing import Any


def stream_finished(stats: dict[str, Any]) -> bool:
    """True once the buffer has finished (at least) one stream and kept its report."""
    return bool(stats.get("last_stream")) and int(stats.get("streams_finished", 0)) >= 1


def progress(stats: dict[str, Any]) -> tuple[int, int]:
    """What changes while data flows: (messages in, messages out)."""
    return int(stats.get("messages_in", 0)), int(stats.get("messages_out", 0))


def final_stats(report: dict[str, Any]) -> dict[str, Any]:
    """The transfer's numbers from the buffer's final report (its ``last_stream``).

    The duration runs from the first data message the buffer received to the end of the stream.
    """
    first = report.get("stream_first_data_at")
    finished = report.get("stream_finished_at")
    duration_s = float(finished - first) if first is not None and finished is not None else 0.0
    producers = report.get("producers", {})
    per_producer = producers.get("per_producer", {})
    events = sum(int(p.get("events", 0)) for p in per_producer.values())
    skipped = sum(int(p.get("skipped", 0)) for p in per_producer.values())
    bytes_out = int(report.get("stream_bytes_out", report.get("bytes_out", 0)))
    duration = max(duration_s, 1e-9)
    return {
        "ok": report.get("state") == "done",
        "events": events,
        "messages": int(report.get("stream_messages_out", report.get("messages_out", 0))),
        "bytes": bytes_out,
        "mb_per_s": round(bytes_out / duration / 1e6, 3),
        "duration_s": round(duration_s, 3),
        "per_rank": {
            str(p.get("rank")): {"events": p.get("events"), "messages": p.get("messages")}
            for p in per_producer.values()
        },
        "producers_ended": producers.get("ended", 0),
        "producers_expected": producers.get("expected"),
        "skipped": skipped,
        "lost": int(report.get("dropped_messages", 0)),
        "problems": list(report.get("problems", [])),
    }
