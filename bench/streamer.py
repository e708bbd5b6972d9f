"""Streamer throughput against a raw-socket baseline, in one run on this machine.

Framework: ``mpiexec -n 2 lclstreamer`` (synthetic epix10k2M uint16 frames, batches of 10, no
reduction, no compression) -> a receiver that parses every message's HDF5 header.
Baseline: ``mpiexec -n 2`` processes pushing the same number of messages of the same size
(pre-made bytes, no framework) -> a receiver that only counts bytes. Same transport, same
sockets. Also a table of serialize+parse MB/s per codec.

The default messages (43 MB: a batch of 10 frames) are far bigger than the ~1 MiB at which raw
ZeroMQ is fastest here, so a second pair of runs uses 1 MiB-sized messages (a smaller detector,
one frame per batch) for ZeroMQ: ``small_ratio``. CPU seconds per GB moved (producers, under
``mpiexec``, plus the receiver in this process) are reported for the framework and the raw
baseline at both sizes (``cpu_s_per_gb``, ``raw_cpu_s_per_gb``, ``small_cpu_s_per_gb``,
``small_raw_cpu_s_per_gb``).

Ends with one line of ``key=value`` headline figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages
from airflow_provider_lclstream.protocol import EndOfStream, is_end_of_stream
from airflow_provider_lclstream.streamer.serializers.hdf5 import (
    COMPRESSIONS,
    HDF5BinarySerializer,
)
from airflow_provider_lclstream.streamer.sources.synthetic import SyntheticFrames
from airflow_provider_lclstream.transports import open_receiver, open_sender

BIN = Path(sys.executable).parent
EVENTS_PER_RANK = 600
BATCH = 10
ROUNDS = 3
SHAPE = (16, 352, 384)
SMALL_SHAPE = (4, 352, 384)  # one uint16 frame: 1.08 MB, about where raw ZeroMQ peaks here
SMALL_EVENTS_PER_RANK = 2000


def cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for children so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_sender(url: str, library: str, messages: int, size: int) -> None:
    """Run under mpiexec: push ``messages`` pre-made messages of ``size`` bytes, then an EOS."""
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    payload = np.random.default_rng(rank).integers(0, 4000, size // 2, dtype=np.uint16).tobytes()
    with open_sender(url, library) as sender:
        for _ in range(messages):
            sender.send(payload)
        sender.send(EndOfStream(producer=f"raw{rank}", rank=rank, messages=messages).encode())


def run_raw(library: str, messages: int, size: int) -> tuple[float, float]:
    """(MB/s, CPU s per GB)."""
    url = f"tcp://127.0.0.1:{free_port()}"
    received = {"bytes": 0, "ended": 0, "first": 0.0, "last": 0.0}

    def receive() -> None:
        with open_receiver(url, library) as receiver:
            while received["ended"] < 2:
                message = receiver.recv(60)
                assert message is not None, "raw baseline timed out"
                if not received["first"]:
                    received["first"] = time.perf_counter()
                if is_end_of_stream(message):
                    received["ended"] += 1
                else:
                    received["bytes"] += len(message)
            received["last"] = time.perf_counter()

    thread = threading.Thread(target=receive)
    cpu0 = cpu_seconds()
    thread.start()
    subprocess.run(
        [
            BIN / "mpiexec",
            "-n",
            "2",
            sys.executable,
            __file__,
            "--raw-sender",
            url,
            library,
            str(messages),
            str(size),
        ],
        check=True,
    )
    thread.join()
    cpu = cpu_seconds() - cpu0
    mbps = received["bytes"] / (received["last"] - received["first"]) / 1e6
    return mbps, cpu / (received["bytes"] / 1e9)


def run_framework(
    library: str,
    workdir: Path,
    shape: tuple[int, ...] = SHAPE,
    batch: int = BATCH,
    events: int = EVENTS_PER_RANK,
) -> tuple[float, int, int, float]:
    """(MB/s, messages, bytes per message, CPU s per GB)."""
    url = f"tcp://127.0.0.1:{free_port()}"
    config = {
        "event_source": {
            "type": "InternalEventSource",
            "number_of_events_to_generate": events,
        },
        "data_sources": {"detector_data": {"type": "SyntheticDetector", "shape": list(shape)}},
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": batch},
        "data_serializer": {
            "type": "HDF5BinarySerializer",
            "fields": {"detector_data": "/data/data"},
        },
        "data_handlers": [
            {"type": "BinaryDataStreamingDataHandler", "urls": [url], "library": library}
        ],
    }
    path = workdir / f"bench-{library}.yaml"
    path.write_text(yaml.safe_dump(config))
    report = ReceiveReport(2)
    stamps: dict[str, float] = {}

    def receive() -> None:
        for _ in receive_messages(url, library, expect_producers=2, timeout_s=60, report=report):
            stamps.setdefault("first", time.perf_counter())
        stamps["last"] = time.perf_counter()

    thread = threading.Thread(target=receive)
    cpu0 = cpu_seconds()
    thread.start()
    result = subprocess.run(
        [BIN / "mpiexec", "-n", "2", BIN / "lclstreamer", "-c", path],
        capture_output=True,
        text=True,
        check=True,
    )
    thread.join()
    cpu = cpu_seconds() - cpu0
    assert report.ok and report.events == 2 * events, (report.summary(), result.stderr)
    mbps = report.bytes / (stamps["last"] - stamps["first"]) / 1e6
    return mbps, report.messages, report.bytes // report.messages, cpu / (report.bytes / 1e9)


def codec_table() -> list[tuple[str, float, float, float]]:
    """(codec, compression ratio, serialize MB/s, parse MB/s), best of 3 after a warm-up."""
    import io

    import h5py

    frames = SyntheticFrames(SHAPE)
    batch = {"detector_data": np.stack([frames.frame(i) for i in range(BATCH)])}
    mb = batch["detector_data"].nbytes / 1e6
    rows = []
    for codec in (None, *COMPRESSIONS):
        serializer = HDF5BinarySerializer({"detector_data": "/data"}, codec, 3)
        serializer.serialize(batch, {"seq": 0})  # warm-up (the fast path builds its template)
        serialize_s, parse_s = [], []
        for seq in range(1, 4):
            t0 = time.perf_counter()
            blob = serializer.serialize(batch, {"seq": seq})
            t1 = time.perf_counter()
            with h5py.File(io.BytesIO(bytes(blob))) as h5:
                h5["/data"][()]
            serialize_s.append(t1 - t0)
            parse_s.append(time.perf_counter() - t1)
        rows.append(
            (codec or "none", mb * 1e6 / len(blob), mb / min(serialize_s), mb / min(parse_s))
        )
    return rows


def main(rounds: int = ROUNDS) -> None:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for library in ("zmq", "nng"):
            framework_runs, raw_runs, cpu_runs, raw_cpu_runs = [], [], [], []
            for _ in range(rounds):  # interleaved rounds, medians: this machine is noisy
                framework, messages, size, cpu = run_framework(library, Path(tmp))
                framework_runs.append(framework)
                cpu_runs.append(cpu)
                raw_mbps, raw_cpu = run_raw(library, messages // 2, size)
                raw_runs.append(raw_mbps)
                raw_cpu_runs.append(raw_cpu)
            framework, raw = statistics.median(framework_runs), statistics.median(raw_runs)
            figures[f"{library}_cpu_s_per_gb"] = statistics.median(cpu_runs)
            figures[f"{library}_raw_cpu_s_per_gb"] = statistics.median(raw_cpu_runs)
            print(
                f"{library}: framework {framework:.0f} MB/s, raw {raw:.0f} MB/s, ratio "
                f"{framework / raw:.2f} (medians of {rounds}; {messages} messages of "
                f"{size / 1e6:.1f} MB; runs {[round(x) for x in framework_runs]} vs "
                f"{[round(x) for x in raw_runs]})"
            )
            figures[f"{library}_mbps"] = framework
            figures[f"{library}_raw_mbps"] = raw
            figures[f"{library}_ratio"] = framework / raw
        small, small_raw, small_cpu, small_raw_cpu = [], [], [], []
        for _ in range(rounds):
            mbps, messages, size, cpu = run_framework(
                "zmq", Path(tmp), SMALL_SHAPE, 1, SMALL_EVENTS_PER_RANK
            )
            small.append(mbps)
            small_cpu.append(cpu)
            raw_mbps, raw_cpu = run_raw("zmq", messages // 2, size)
            small_raw.append(raw_mbps)
            small_raw_cpu.append(raw_cpu)
        figures["small_mbps"] = statistics.median(small)
        figures["small_raw_mbps"] = statistics.median(small_raw)
        figures["small_ratio"] = figures["small_mbps"] / figures["small_raw_mbps"]
        figures["small_cpu_s_per_gb"] = statistics.median(small_cpu)
        figures["small_raw_cpu_s_per_gb"] = statistics.median(small_raw_cpu)
        print(
            f"zmq at {size / 1e6:.2f} MB messages: framework {figures['small_mbps']:.0f} MB/s, "
            f"raw {figures['small_raw_mbps']:.0f} MB/s, ratio {figures['small_ratio']:.2f}; "
            f"CPU s/GB {figures['small_cpu_s_per_gb']:.2f} vs "
            f"{figures['small_raw_cpu_s_per_gb']:.2f}"
        )
    print(f"\n{'codec':<22}{'ratio':>8}{'serialize MB/s':>16}{'parse MB/s':>12}")
    for codec, ratio, ser, parse in codec_table():
        print(f"{codec:<22}{ratio:>8.2f}{ser:>16.0f}{parse:>12.0f}")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    print(
        f"ratio={figures['zmq_ratio']:.2f} mbps={figures['zmq_mbps']:.0f} "
        f"nng_ratio={figures['nng_ratio']:.2f} nng_mbps={figures['nng_mbps']:.0f} "
        f"zmq_over_nng={figures['zmq_mbps'] / figures['nng_mbps']:.2f} "
        f"small_ratio={figures['small_ratio']:.2f} "
        f"cpu_s_per_gb={figures['zmq_cpu_s_per_gb']:.2f} "
        f"raw_cpu_s_per_gb={figures['zmq_raw_cpu_s_per_gb']:.2f} "
        f"small_cpu_s_per_gb={figures['small_cpu_s_per_gb']:.2f} "
        f"small_raw_cpu_s_per_gb={figures['small_raw_cpu_s_per_gb']:.2f}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--raw-sender":
        raw_sender(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        parser = argparse.ArgumentParser(
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="example: .venv/bin/python bench/streamer.py --rounds 5",
        )
        parser.add_argument(
            "--rounds", type=int, default=ROUNDS, help=f"interleaved rounds (default {ROUNDS})"
        )
        args = parser.parse_args()
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        main(args.rounds)
