"""Upstream's HDF5 pull script reads a whole ``mpiexec -n 2 lclstreamer`` stream, end records too.

Each rank's end-of-stream record is an HDF5 image whose datasets have 0 rows: the script, which
knows nothing of it, counts it as empty data and goes on, while our receiver still gets exact
accounting from the same records.
"""

from __future__ import annotations

import subprocess
import sys
import time
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

RANKS, EVENTS = 2, 11  # per rank: batches of 4, 4, 3


def test_upstream_hdf5_pull_script_reads_our_end_records_as_empty(
    mpiexec: str, tmp_path: Path
) -> None:
    pull_url, our_url = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    script = Path(__file__).with_name("upstream_pull_hdf5_zmq.py")
    pull = subprocess.Popen(
        [sys.executable, str(script), pull_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    receiver = BackgroundReceiver(our_url, "zmq", bind=True, producers=RANKS)
    config = {
        "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": EVENTS},
        "data_sources": {
            "detector_data": {"type": "SyntheticDetector", "shape": [2, 16, 16]},
            "timestamp": {"type": "ConstValue", "value": 1.5, "dtype": "float64"},
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 4},
        "data_serializer": {
            "type": "HDF5BinarySerializer",
            "fields": {"detector_data": "/data", "timestamp": "/timestamp"},
            "compression": "bitshuffle_with_lz4",
        },
        "data_handlers": [
            {"type": "BinaryDataStreamingDataHandler", "urls": [url], "library": "zmq"}
            for url in (pull_url, our_url)
        ],
    }
    try:
        result = run_streamer(mpiexec, RANKS, write_config(tmp_path / "c.yaml", config))
        assert result.returncode == 0, result.stderr
        lines: list[str] = []
        deadline = time.monotonic() + 30
        assert pull.stdout is not None
        while len(lines) < RANKS * 4 and time.monotonic() < deadline:
            line = pull.stdout.readline()
            if not line:
                break
            if line.startswith("Received "):
                lines.append(line.strip())
        time.sleep(0.5)
        assert pull.poll() is None, f"upstream's pull script died: {pull.stderr.read()}"  # type: ignore[union-attr]
    finally:
        pull.kill()
        pull.wait()
    # 3 data messages and 1 end record per rank; the records add 0 to the count
    assert len(lines) == RANKS * 4, lines
    assert lines[-1] == f"Received {RANKS * EVENTS} messages"
    counts = [int(line.split()[1]) for line in lines]
    assert sum(b == a for a, b in zip([0, *counts], counts, strict=False)) == RANKS
    report = receiver.join()
    assert report.ok, report.summary()
    assert sorted(r.events for r in report.ended) == [EVENTS] * RANKS
    assert total_line(result.stdout)["events"] == RANKS * EVENTS
