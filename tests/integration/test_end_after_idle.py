"""``--end-after-idle``: producers that send no end-of-stream record, as upstream's streamer.

The producer speaks upstream's wire form: a ZeroMQ PUSH socket sending one HDF5 file image per
batch and nothing else. Upstream's own streamer cannot be installed here (it needs its pixi
environment and ``stream``), so this is its wire form from h5py and pyzmq.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import zmq

from tests.integration.buffer_consumer import free_port, start_buffer, wait_consumers

BIN = Path(sys.executable).parent
BATCHES, ROWS = 5, 3


def upstream_message(i: int) -> bytes:
    out = io.BytesIO()
    with h5py.File(out, "w") as h5:
        h5.create_dataset("data", data=np.full((ROWS, 8, 8), i, dtype=np.uint16))
    return out.getvalue()


def push_without_end(url: str, hold_s: float) -> None:
    """Send BATCHES HDF5 images, no end-of-stream record; keep the link open ``hold_s``."""
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.connect(url)
    for i in range(BATCHES):
        socket.send(upstream_message(i))
    time.sleep(hold_s)
    socket.close(linger=2000)
    context.term()


def receive(url: str, *args: str) -> subprocess.Popen:
    cmd = [str(BIN / "lclstream-receive"), "--url", url, "--quiet", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=30)
    return {"rc": proc.returncode, **json.loads(out.strip().splitlines()[-1]), "stderr": err}


def test_receiver_ends_after_idle_with_eos_false_and_status_3() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = receive(url, "--end-after-idle", "1", "--timeout", "30")
    time.sleep(0.5)
    started = time.monotonic()
    push_without_end(url, hold_s=3)  # the link stays open, only quiet
    report = summary(proc)
    assert report["rc"] == 3, report
    assert report["eos"] is False and report["ended_by_idle"] is True and report["ok"] is False
    assert report["messages"] == BATCHES and report["events"] == BATCHES * ROWS
    assert time.monotonic() - started < 10  # ended by the 1 s idle, not the 30 s timeout


def test_receiver_without_the_option_times_out_with_status_1() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = receive(url, "--timeout", "1.5")
    time.sleep(0.5)
    push_without_end(url, hold_s=0)
    report = summary(proc)
    assert report["rc"] == 1 and report["eos"] is False and report["ended_by_idle"] is False
    assert report["messages"] == BATCHES


def test_receiver_with_end_records_still_exits_0(tmp_path: Path) -> None:
    from airflow_provider_lclstream.protocol import EndOfStream

    url = f"tcp://127.0.0.1:{free_port()}"
    proc = receive(url, "--end-after-idle", "5")
    time.sleep(0.5)
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.connect(url)
    for i in range(BATCHES):
        socket.send(upstream_message(i))
    socket.send(EndOfStream("p", messages=BATCHES, events=BATCHES * ROWS).encode())
    socket.close(linger=2000)
    context.term()
    report = summary(proc)
    assert report["rc"] == 0 and report["eos"] is True and report["ended_by_idle"] is False


def test_buffer_ends_after_idle_delivers_and_exits_3(tmp_path: Path) -> None:
    inp, out = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    port = free_port()
    log = tmp_path / "buffer.log"
    buf = start_buffer(
        log, "--input", inp, "--output", out, "--end-after-idle", "1",
        "--report", str(tmp_path / "report.json"), "--metrics", f"127.0.0.1:{port}",
    )  # fmt: skip
    consumer = receive(out, "--dial", "--timeout", "30")
    wait_consumers(port, 1)
    push_without_end(inp, hold_s=3)
    assert buf.wait(30) == 3, log.read_text()
    report = summary(consumer)
    # the consumer got every message and the buffer's record, which says completeness is unknown
    assert report["messages"] == BATCHES and report["events"] == BATCHES * ROWS
    assert report["eos"] is True and report["rc"] == 0, report
    stats = json.loads((tmp_path / "report.json").read_text())
    assert stats["eos"] is False and stats["state"] == "done"
    assert stats["reason"] == "ended by idleness"
    assert any("completeness unknown" in p for p in stats["problems"])
