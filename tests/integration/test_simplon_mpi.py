"""``mpiexec -n 2 lclstreamer`` with Simplon (upstream's wire form) to two real consumers.

One is upstream's own pull script logic (``upstream_pull_simplon_zmq.py``): it must read every
message and see every image before any stop. The other is our receiver: exact accounting from
the Simplon-shaped end-of-stream records, every rank's start before its images, frames decoded
bit-exact against the synthetic detector.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import cbor2
import numpy as np
import pytest

from airflow_provider_lclstream.config.streamer_components import SyntheticDetector
from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages
from airflow_provider_lclstream.streamer.serializers.simplon import (
    MESSAGE_ID_STRIDE,
    decompress_frame,
    parse_shape,
)
from airflow_provider_lclstream.streamer.sources.base import generic_value
from tests.integration.streaming import free_port, run_streamer, total_line, write_config

pytestmark = pytest.mark.mpi

EVENTS = 7  # per rank
DETECTOR = {"type": "SyntheticDetector", "shape": [2, 24, 40], "seed": 4}


def simplon_config(urls: list[str]) -> dict:
    return {
        "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": EVENTS},
        "data_sources": {
            "timestamp": {
                "type": "GenericRandomNumpyArray",
                "array_shape": [1],
                "array_dtype": "uint32",
            },
            "detector_data": DETECTOR,
            "detector_geometry": {"type": "ConstValue", "value": ["jf-7", "geo"], "dtype": "str"},
            "run_info": {"type": "ConstValue", "value": ["mfxl1047723", "266"], "dtype": "str"},
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 3},
        "data_serializer": {
            "type": "SimplonBinarySerializer",
            "data_source_to_serialize": "jungfrau.raw.calib",
            "polarization_fraction": 0.99,
            "polarization_axis": [1.0, 0.0, 0.0],
            "data_collection_rate": "120Hz",
            "detector_name": "jungfrau",
            "detector_type": "AreaDetector",
        },
        "data_handlers": [
            {
                "type": "BinaryDataStreamingDataHandler",
                "urls": [url],
                "library": "zmq",
                "role": "client",
            }
            for url in urls
        ],
    }


class Collector:
    """Our receiver in a thread, keeping every data message's bytes."""

    def __init__(self, url: str, producers: int) -> None:
        self.report = ReceiveReport(producers)
        self.raw: list[bytes] = []
        self.thread = threading.Thread(target=self._run, args=(url, producers), daemon=True)
        self.thread.start()

    def _run(self, url: str, producers: int) -> None:
        for message in receive_messages(
            url, "zmq", bind=True, expect_producers=producers, timeout_s=60, report=self.report
        ):
            self.raw.append(bytes(message.raw))


def read_pull_script(proc: subprocess.Popen, stops: int, timeout: float) -> list[tuple[str, str]]:
    """(header, type) of every message the pull script printed, until ``stops`` stops."""
    seen: list[tuple[str, str]] = []
    header = ""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while sum(t == "stop" for _, t in seen) < stops and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("  Header: "):
            header = line.split(": ", 1)[1].strip()
        elif line.startswith("  Type: "):
            seen.append((header, line.split(": ", 1)[1].strip()))
    return seen


def test_simplon_two_ranks_upstream_pull_script_and_bit_exact(mpiexec: str, tmp_path: Path) -> None:
    ranks = 2
    pull_url, our_url = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    script = Path(__file__).with_name("upstream_pull_simplon_zmq.py")
    pull = subprocess.Popen(
        [sys.executable, str(script), pull_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    collector = Collector(our_url, ranks)
    try:
        config = write_config(tmp_path / "c.yaml", simplon_config([pull_url, our_url]))
        result = run_streamer(mpiexec, ranks, config)
        assert result.returncode == 0, result.stderr
        seen = read_pull_script(pull, stops=ranks, timeout=30)
        assert pull.poll() is None, f"upstream's pull script died: {pull.stderr.read()}"  # type: ignore[union-attr]
    finally:
        pull.kill()
        pull.wait()
    # upstream's consumer: a start per rank first, every image, then the stops, nothing else
    types = [t for _, t in seen]
    assert types.count("start") == ranks and types.count("image") == ranks * EVENTS
    assert types.count("stop") == ranks and len(types) == ranks * (EVENTS + 2)
    # Each rank sends start, its images, stop; the ranks' messages interleave (a rank that
    # ends first sends its stop before the other's last images, as on a loaded CI machine).
    # At every point: images only from started ranks, stops only after a rank's worth of images.
    for end in range(1, len(types) + 1):
        head = types[:end]
        assert head.count("image") <= EVENTS * head.count("start"), head
        assert head.count("stop") <= head.count("image") // EVENTS, head
    assert types[-1] == "stop"
    assert {h for h, t in seen if t == "image"} == {"m"}
    assert {h for h, t in seen if t != "image"} == {"c"}

    collector.thread.join(60)
    assert not collector.thread.is_alive(), "our receiver did not finish"
    report = collector.report
    assert not report.timed_out and not report.corrupt
    assert sorted(r.events for r in report.ended) == [EVENTS] * ranks
    assert sorted(r.messages for r in report.ended) == [EVENTS + 1] * ranks  # start + images
    assert report.messages == len(collector.raw) == ranks * (EVENTS + 1)
    total = total_line(result.stdout)
    assert total["events"] == ranks * EVENTS

    frames = generic_value("detector_data", SyntheticDetector(**DETECTOR), "", 0)
    started: dict[int, dict] = {}
    next_event = dict.fromkeys(range(ranks), 0)
    for raw in collector.raw:
        content = cbor2.loads(raw[1:])
        rank = content["message_id"] // MESSAGE_ID_STRIDE
        if content["type"] == "start":
            assert raw[:1] == b"c" and rank not in started
            started[rank] = content
            continue
        assert raw[:1] == b"m" and content["type"] == "image"
        assert rank in started, f"rank {rank}'s image came before its start message"
        start = started[rank]
        frame = decompress_frame(
            content["compressed_data"], parse_shape(start["shape"]), start["datatype"]
        )
        index = next_event[rank] * ranks + rank  # rank r makes frames r, r + size, ...
        expected = frames(index)
        assert frame.dtype == expected.dtype and frame.tobytes() == expected.tobytes()
        next_event[rank] += 1
    assert next_event == dict.fromkeys(range(ranks), EVENTS)
    assert {s["experiment"] for s in started.values()} == {"mfxl1047723"}
    assert np.all([s["detector"]["id"] == "jf-7" for s in started.values()])


def test_simplon_through_the_buffer_ends_with_a_simplon_stop(mpiexec: str, tmp_path: Path) -> None:
    """2 ranks -> ``lclstream-buffer`` -> upstream's pull script: the buffer's own end-of-stream
    record is a Simplon ``c`` stop (not an HDF5 image, which the script would die on), after
    every image, carrying the buffer's counts."""
    from tests.integration.buffer_consumer import start_buffer

    ranks = 2
    pull_url, inp = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    script = Path(__file__).with_name("upstream_pull_simplon_zmq.py")
    pull = subprocess.Popen(
        [sys.executable, str(script), pull_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    buffer = start_buffer(
        tmp_path / "buffer.log", "--input", inp, "--output", pull_url, "--dial-output",
        "--expect-producers", str(ranks), "--drain-timeout", "3",
        "--report", str(tmp_path / "report.json"),
    )  # fmt: skip
    try:
        config = write_config(tmp_path / "c.yaml", simplon_config([inp]))
        result = run_streamer(mpiexec, ranks, config)
        assert result.returncode == 0, result.stderr
        seen = read_pull_script(pull, stops=1, timeout=30)
        buffer.wait(30)
        assert pull.poll() is None, f"upstream's pull script died: {pull.stderr.read()}"  # type: ignore[union-attr]
    finally:
        pull.kill()
        pull.wait()
        buffer.kill()
        buffer.wait()
    types = [t for _, t in seen]
    assert types.count("start") == ranks and types.count("image") == ranks * EVENTS
    assert types[-1] == "stop" and types.count("stop") == 1, types
    assert seen[-1][0] == "c"
    import json

    stats = json.loads((tmp_path / "report.json").read_text())
    assert stats["messages_in"] == stats["messages_out"] == ranks * (EVENTS + 1)


@pytest.mark.psana
def test_simplon_psana2_start_message_from_data_sources(
    mpiexec: str, tmp_path: Path, xtc2_file: Path
) -> None:
    """Upstream's psana2 Simplon example's data sources, on xtcwriter data."""
    url = f"tcp://127.0.0.1:{free_port()}"
    config = simplon_config([url])
    config["source_identifier"] = f"files={xtc2_file}"
    config["skip_incomplete_events"] = True
    config["event_source"] = {"type": "Psana2EventSource", "calibration": "skip"}
    config["data_sources"] = {
        "timestamp": {"type": "Psana2Timestamp"},
        "detector_data": {
            "type": "Psana2DetectorInterface",
            "psana_name": "xppcspad",
            "psana_fields": "raw.raw",
        },
        "detector_geometry": {
            "type": "Psana2DetectorInterface",
            "psana_name": "xppcspad",
            "psana_fields": ["_detid"],  # xtcwriter data has no geometry constants offline
            "dtype": "str",
        },
        "run_info": {"type": "Psana2RunInfo"},
    }
    collector = Collector(url, 2)
    result = run_streamer(mpiexec, 2, write_config(tmp_path / "p.yaml", config))
    assert result.returncode == 0, result.stderr
    collector.thread.join(60)
    report = collector.report
    assert not report.timed_out and sum(r.events for r in report.ended) == 10
    messages = [cbor2.loads(raw[1:]) for raw in collector.raw]
    starts = [m for m in messages if m["type"] == "start"]
    images = [m for m in messages if m["type"] == "image"]
    assert len(images) == 10 and 1 <= len(starts) <= 2  # psana2's smd0 rank reads no events
    start = starts[0]
    assert start["detector"]["id"] == "detnum1234"  # xtcwriter's cspad
    assert (start["experiment"], start["run_number"], start["beamline"]) == (
        "xpptut15",
        "14",
        "XPP",
    )
    assert start["datatype"] == "uint16" and start["shape"] == "2x3x6"
    for image in images:
        frame = decompress_frame(
            image["compressed_data"], parse_shape(start["shape"]), start["datatype"]
        )
        assert frame.sum().item() == image["sum"] and isinstance(image["timestamp"], int)
