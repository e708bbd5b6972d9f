"""``lost_buffer_accounting``: exact only when every rank and consumer reported; otherwise the
known counts, marked as lower bounds, and no missing count. The summary lines are the real
writers' (``Counters.summary`` of the engine, ``ReceiveReport.summary`` of the receiver)."""

from __future__ import annotations

import json

from airflow_provider_lclstream.consumer.receiver import ReceiveReport
from airflow_provider_lclstream.streamer.engine import Counters
from airflow_provider_lclstream.transfer.report import (
    accounting_line,
    lost_buffer_accounting,
    rank_summaries,
    receive_summary,
)


def rank_line(rank: int, events: int) -> str:
    counters = Counters(rank, f"host:{rank}")
    counters.events = events
    return json.dumps(
        {**counters.summary(), "error": "terminated by signal 15", "terminated": True}
    )


def receiver_line(events: int, delivered: int) -> str:
    report = ReceiveReport(1)
    report.events = events
    return json.dumps({**report.summary(), "events_delivered": delivered, "terminated": True})


def streamer_log(*lines: str) -> str:
    return "\n".join(["[rank 0] 4 events, 1.0 ev/s, 0.0 MB/s", *lines, "TOTAL {}"]) + "\n"


def test_exact_when_everyone_reported() -> None:
    log = streamer_log(rank_line(0, 9), rank_line(1, 8))
    accounting = lost_buffer_accounting(2, log, {"7": "INFO x\n" + receiver_line(7, 6)})
    assert accounting["exact"] and accounting["missing"] == 17 - 6
    assert (accounting["produced"], accounting["delivered"]) == (17, 6)  # events_delivered wins
    assert accounting["per_rank"] == {"0": 9, "1": 8} and accounting["per_consumer"] == {"7": 6}
    assert accounting_line(accounting) == "17 events produced, 6 delivered, 11 missing"


def test_a_rank_that_never_reported_makes_produced_a_lower_bound() -> None:
    accounting = lost_buffer_accounting(
        3, streamer_log(rank_line(2, 5)), {"7": receiver_line(4, 4)}
    )
    assert not accounting["exact"] and accounting["missing"] is None
    assert accounting["produced_is_lower_bound"] and not accounting["delivered_is_lower_bound"]
    assert accounting["ranks_without_summary"] == [0, 1]
    assert accounting_line(accounting) == (
        "at least 5 events produced, 4 delivered, missing unknown, "
        "streamer ranks [0, 1] sent no count"
    )


def test_a_consumer_that_is_not_ours_or_none_at_all() -> None:
    log = streamer_log(rank_line(0, 3))
    other = lost_buffer_accounting(1, log, {"7": "my own consumer's output\n", "8": None})
    assert other["delivered_is_lower_bound"] and other["consumers_without_summary"] == ["7", "8"]
    assert "at least 0 delivered" in accounting_line(other)
    addr = lost_buffer_accounting(1, log, {})
    assert addr["missing"] is None and "no consumer job to ask" in accounting_line(addr)


def test_the_last_line_of_a_rank_counts_and_other_json_is_ignored() -> None:
    log = streamer_log(rank_line(0, 1), '{"unrelated": 1}', "{not json}", rank_line(0, 4))
    assert rank_summaries(log)[0]["events"] == 4
    assert receive_summary('{"events": 3}\n') is None


def test_a_summary_after_another_process_s_unfinished_line_still_counts() -> None:
    log = streamer_log(rank_line(0, 1), "[rank 1] 10 events, 3.0 ev/s {x" + rank_line(1, 5))
    assert {rank: s["events"] for rank, s in rank_summaries(log).items()} == {0: 1, 1: 5}
