"""``mpiexec -n 8 lclstreamer``, as upstream's README launches it: exact counts at the receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.streaming import (
    BackgroundReceiver,
    free_port,
    run_streamer,
    total_line,
    write_config,
)

pytestmark = pytest.mark.mpi

RANKS = 8
EVENTS = 5  # per rank: batches of 2, 2, 1


def test_eight_ranks_exact_counts(mpiexec: str, tmp_path: Path) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    receiver = BackgroundReceiver(url, "zmq", bind=True, producers=RANKS)
    config = {
        "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": EVENTS},
        "data_sources": {
            "detector_data": {"type": "SyntheticDetector", "shape": [16, 16]},
            "pulse": {"type": "ConstValue", "value": 1.5, "dtype": "float32"},
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 2},
        "data_serializer": {
            "type": "HDF5BinarySerializer",
            "fields": {"detector_data": "/data/data", "pulse": "/pulse"},
        },
        "data_handlers": [
            {"type": "BinaryDataStreamingDataHandler", "urls": [url], "library": "zmq"}
        ],
    }
    result = run_streamer(mpiexec, RANKS, write_config(tmp_path / "c.yaml", config), timeout=180)
    assert result.returncode == 0, result.stderr
    report = receiver.join()
    total = total_line(result.stdout)
    assert total["ranks"] == RANKS and total["errors"] == []
    assert total["events"] == RANKS * EVENTS and total["per_rank_events"] == [EVENTS] * RANKS
    assert total["messages"] == RANKS * 3 and total["batches"] == RANKS * 3
    assert report.ok, report.summary()
    assert report.messages == RANKS * 3 and report.events == RANKS * EVENTS
    assert sorted(receiver.events_per_message) == sorted([2, 2, 1] * RANKS)
    assert sorted(r.rank for r in report.ended) == list(range(RANKS))
    assert all(r.events == EVENTS and r.messages == 3 for r in report.ended)
    assert len(report.producers) == RANKS
    assert all(p.received == 3 and p.seqs == {0, 1, 2} for p in report.producers.values())
