"""TransferSensor.execute_complete reads the watch's result through ``TransferSummary``."""

from __future__ import annotations

import pytest

from airflow_provider_lclstream.exceptions import TransferFailedError
from airflow_provider_lclstream.sensors.transfer import TransferSensor
from airflow_provider_lclstream.transfer.stats import final_stats

REPORT = {
    "state": "done",
    "stream_first_data_at": 100.0,
    "stream_finished_at": 102.0,
    "stream_messages_out": 4,
    "stream_bytes_out": 4_000_000,
    "producers": {
        "ended": 2,
        "expected": 2,
        "per_producer": {
            "p0": {"rank": 0, "events": 20, "messages": 2, "skipped": 1},
            "p1": {"rank": 1, "events": 20, "messages": 2},
        },
    },
}


def sensor() -> TransferSensor:
    return TransferSensor(task_id="watch_transfer", metrics_url="http://h:1")


def test_success_returns_the_summary() -> None:
    summary = final_stats(REPORT)
    assert (summary["events"], summary["skipped"], summary["mb_per_s"]) == (40, 1, 2.0)
    ranks = {"0": {"events": 20, "messages": 2}, "1": {"events": 20, "messages": 2}}
    assert summary["per_rank"] == ranks
    result = sensor().execute_complete({}, {"status": "success", "stats": summary})  # type: ignore[arg-type]
    assert result == summary


def test_failed_raises_with_the_buffers_problems() -> None:
    summary = final_stats({**REPORT, "state": "failed", "problems": ["1 of 2 expected ended"]})
    with pytest.raises(TransferFailedError, match="incomplete: 1 of 2 expected ended"):
        sensor().execute_complete({}, {"status": "failed", "stats": summary})  # type: ignore[arg-type]
