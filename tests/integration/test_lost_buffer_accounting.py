"""A buffer killed mid-stream, outside Airflow: real ``mpiexec -n 2 lclstreamer`` (paced),
``lclstream-buffer`` and ``lclstream-receive --out``. The buffer gets SIGKILL; streamer and
receiver get SIGTERM, as a cancelled job does; each prints its counts, and
``lost_buffer_accounting`` turns them into produced, delivered and missing events, which must
match the receiver's files exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest

from airflow_provider_lclstream.transfer.report import accounting_line, lost_buffer_accounting
from tests.integration.streaming import BIN, free_port, write_config

pytestmark = pytest.mark.mpi
RANKS = 2
EVENTS = 40  # per rank, 4 a second: the run is stopped long before its end


def paced_config(url: str) -> dict:
    return {
        "event_source": {
            "type": "InternalEventSource",
            "number_of_events_to_generate": EVENTS,
            "events_per_second": 4.0,
        },
        "data_sources": {"detector_data": {"type": "SyntheticDetector", "shape": [1, 32, 32]}},
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 2},
        "data_serializer": {"type": "HDF5BinarySerializer"},
        "data_handlers": [
            {"type": "BinaryDataStreamingDataHandler", "urls": [url], "library": "zmq"}
        ],
    }


def file_events(directory: Path) -> int:
    total = 0
    for path in sorted(directory.glob("*.h5")):
        with h5py.File(path) as f:
            total += max(d.shape[0] for d in f.values() if isinstance(d, h5py.Dataset))
    return total


def test_killed_buffer_counts_add_up(mpiexec: str, tmp_path: Path) -> None:
    inp, out = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    files = tmp_path / "received"
    started = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True,
               "start_new_session": True}  # fmt: skip
    buffer = subprocess.Popen(
        [str(BIN / "lclstream-buffer"), "--input", inp, "--output", out,
         "--expect-producers", str(RANKS)], **started,
    )  # fmt: skip
    receiver = subprocess.Popen(
        [str(BIN / "lclstream-receive"), "--url", out, "--dial", "--out", str(files),
         "--expect-producers", "1", "--timeout", "120", "--quiet"], **started,
    )  # fmt: skip
    config = write_config(tmp_path / "c.yaml", paced_config(inp))
    streamer = subprocess.Popen(
        [mpiexec, "-n", str(RANKS), str(BIN / "lclstreamer"), "-c", str(config)], **started
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(files.glob("*.h5"))) < 3:
            assert time.monotonic() < deadline, "no data reached the receiver"
            assert streamer.poll() is None and buffer.poll() is None
            time.sleep(0.2)
        buffer.kill()
        buffer.wait(10)
        time.sleep(1.0)  # the ranks go on reading and sending into the void
        os.killpg(streamer.pid, signal.SIGTERM)  # what SLURM and the local backend send
        os.killpg(receiver.pid, signal.SIGTERM)
        streamer_out, streamer_err = streamer.communicate(timeout=30)
        receiver_out, receiver_err = receiver.communicate(timeout=30)
    finally:
        for proc in (streamer, receiver, buffer):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    ranks = [json.loads(line) for line in streamer_out.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in ranks) == [0, 1], (streamer_out, streamer_err[-2000:])
    assert all(r["terminated"] for r in ranks), ranks
    consumer = json.loads(receiver_out.splitlines()[-1])
    assert consumer["terminated"] is True and receiver.returncode == 1, receiver_err[-2000:]
    accounting = lost_buffer_accounting(RANKS, streamer_out, {"c0": receiver_out})
    delivered = file_events(files)
    assert accounting["exact"] is True, accounting
    assert accounting["delivered"] == consumer["events_delivered"] == delivered, accounting
    assert accounting["produced"] == sum(r["events"] for r in ranks)
    assert accounting["produced"] == delivered + accounting["missing"], accounting
    assert accounting["missing"] > 0 and accounting["produced"] < RANKS * EVENTS, accounting
    print(accounting_line(accounting))
