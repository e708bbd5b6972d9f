"""The end of a transfer: a human line in the log, counters to the Elog when asked for; and
when its buffer died mid-stream, the exact count of the events that never arrived."""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)
ACCOUNTING_XCOM_KEY = "accounting"
"""XCom key (of ``run_streamer``) of a transfer's accounting when its buffer died mid-stream."""


def summary_line(stats: dict[str, Any]) -> str:
    return (
        f"{stats.get('events', 0)} events, {stats.get('bytes', 0) / 1e6:.1f} MB in "
        f"{stats.get('duration_s', 0):.1f} s ({stats.get('mb_per_s', 0):.1f} MB/s), "
        f"{stats.get('skipped', 0)} skipped, {stats.get('lost', 0)} lost"
    )


def elog_counters(stats: dict[str, Any]) -> dict[str, str]:
    """The ARP counters for a finished transfer."""
    return {
        "LCLStream events": str(stats.get("events", 0)),
        "LCLStream MB": f"{stats.get('bytes', 0) / 1e6:.1f}",
        "LCLStream MB/s": f"{stats.get('mb_per_s', 0):.1f}",
        "LCLStream lost": str(stats.get("lost", 0)),
    }


# ``report_transfer`` (log the numbers, post them to the Elog) needs the Elog hook: it lives in
# ``hooks/elog.py`` (this package stays free of Airflow).


# -- a transfer whose buffer died: what the producers read against what the consumers wrote --


def rank_summaries(text: str) -> dict[int, dict[str, Any]]:
    """Each streamer rank's summary line in a job log, by rank (the last one a rank printed).

    A summary is a JSON object with ``producer``, ``rank`` and ``events`` (``streamer/cli.py``:
    at the end of the run, or on SIGTERM with ``"terminated": true``); other lines are skipped.
    A rank's tally (``streamer/tally.py``, ``"lower_bound": true``: printed by the job after a
    failed ``mpiexec``) counts only when that rank printed no summary of its own.
    """
    found: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        data = _json_object(line)
        if data is not None and {"producer", "rank", "events"} <= data.keys():
            rank = int(data["rank"])
            if data.get("lower_bound") and rank in found and not found[rank].get("lower_bound"):
                continue
            found[rank] = data
    return found


def receive_summary(text: str) -> dict[str, Any] | None:
    """The last ``lclstream-receive`` summary line in a consumer job's log, or None."""
    found = None
    for line in text.splitlines():
        data = _json_object(line)
        if data is not None and {"expect_producers", "events", "eos"} <= data.keys():
            found = data
    return found


def _json_object(line: str) -> dict[str, Any] | None:
    """The JSON object that ends ``line``, or None. It may start mid-line: each rank writes its
    summary whole, but another process sharing the log (psana's C code, a ``print``) can have
    left its line unfinished before it."""
    line = line.strip()
    if not line.endswith("}"):
        return None
    at = line.find("{")
    while at >= 0:
        try:
            data = json.loads(line[at:])
        except ValueError:
            at = line.find("{", at + 1)
            continue
        return data if isinstance(data, dict) else None
    return None


def lost_buffer_accounting(
    ranks: int,
    streamer_log: str,
    consumer_logs: dict[str, str | None],
) -> dict[str, Any]:
    """Produced, delivered and missing events of a transfer whose buffer ended mid-stream.

    ``produced``: events the streamer's ranks read (their summary lines, printed at the end or
    when the job was cancelled); ``delivered``: events the consumers handled (their
    ``lclstream-receive`` summaries: ``events_delivered``, else ``events``); ``missing``: the
    difference. ``exact`` only when every rank and every consumer reported; otherwise the
    counts that are known are given, ``produced_is_lower_bound`` / ``delivered_is_lower_bound``
    say which are only lower bounds (a rank or consumer killed before it could report, a rank
    known only by its tally, a consumer that is not ``lclstream-receive``), and ``missing`` is
    None. The same holds for a streamer that failed with its buffer alive (e.g. a rank killed
    by psana on a corrupt dgram): pass the receivers' logs as ``consumer_logs``.
    """
    summaries = rank_summaries(streamer_log)
    silent_ranks = [rank for rank in range(ranks) if rank not in summaries]
    tallied_ranks = sorted(rank for rank, s in summaries.items() if s.get("lower_bound"))
    produced = sum(int(s.get("events") or 0) for s in summaries.values())
    per_consumer: dict[str, int | None] = {}
    for job_id, text in consumer_logs.items():
        summary = receive_summary(text or "")
        if summary is None:
            per_consumer[job_id] = None
        else:
            per_consumer[job_id] = int(summary.get("events_delivered", summary["events"]))
    silent_consumers = [job_id for job_id, n in per_consumer.items() if n is None]
    delivered = sum(n for n in per_consumer.values() if n is not None)
    exact = not silent_ranks and not tallied_ranks and not silent_consumers and bool(consumer_logs)
    return {
        "ok": False,
        "produced": produced,
        "delivered": delivered,
        "missing": produced - delivered if exact else None,
        "exact": exact,
        "produced_is_lower_bound": bool(silent_ranks or tallied_ranks),
        "delivered_is_lower_bound": bool(silent_consumers) or not consumer_logs,
        "per_rank": {str(rank): int(summaries[rank].get("events") or 0) for rank in summaries},
        "ranks_without_summary": silent_ranks,
        "ranks_counted_to_last_batch": tallied_ranks,
        "per_consumer": per_consumer,
        "consumers_without_summary": silent_consumers,
    }


def accounting_line(accounting: dict[str, Any]) -> str:
    """One sentence for the task's failure: the counts, and what they cannot know."""
    produced, delivered = accounting["produced"], accounting["delivered"]
    if accounting["exact"]:
        return f"{produced} events produced, {delivered} delivered, {accounting['missing']} missing"
    parts = [
        f"{'at least ' if accounting['produced_is_lower_bound'] else ''}{produced} events produced",
        f"{'at least ' if accounting['delivered_is_lower_bound'] else ''}{delivered} delivered",
        "missing unknown",
    ]
    if accounting["ranks_without_summary"]:
        parts.append(f"streamer ranks {accounting['ranks_without_summary']} sent no count")
    if accounting.get("ranks_counted_to_last_batch"):
        parts.append(
            f"streamer ranks {accounting['ranks_counted_to_last_batch']} died: counted up to "
            "their last batch"
        )
    if accounting["consumers_without_summary"]:
        parts.append(f"consumer jobs {accounting['consumers_without_summary']} sent no count")
    elif not accounting["per_consumer"]:
        parts.append("no consumer job to ask (addr: your own receiver)")
    return ", ".join(parts)
