"""`make demo`: the main job on embedded defaults, no SLURM or Kafka needed.

Two MPI ranks stream synthetic epix10k2M frames (batches of 10, bitshuffle+LZ4) over ZeroMQ to a
receiver that writes one HDF5 file per message; prints a human summary at the end.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUT = REPO / "demo-output"
EVENTS_PER_RANK = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    url = f"tcp://127.0.0.1:{free_port()}"
    config = {
        "source_identifier": "synthetic:epix10k2M",
        "event_source": {
            "type": "InternalEventSource",
            "number_of_events_to_generate": EVENTS_PER_RANK,
        },
        "data_sources": {
            "detector_data": {"type": "SyntheticDetector", "detector": "epix10k2M"},
            "identifier": {"type": "SourceIdentifier"},
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 10},
        "data_serializer": {
            "type": "HDF5BinarySerializer",
            "fields": {"detector_data": "/data/data"},
            "compression": "bitshuffle_with_lz4",
        },
        "data_handlers": [
            {"type": "BinaryDataStreamingDataHandler", "urls": [url], "library": "zmq"}
        ],
    }
    config_path = OUT / "lclstreamer.yaml"
    config_path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    receiver = subprocess.Popen(
        [
            BIN / "lclstream-receive",
            "--url",
            url,
            "--out",
            OUT / "files",
            "--expect-producers",
            "2",
            "--timeout",
            "120",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    streamer = subprocess.Popen(
        [
            BIN / "mpiexec",
            "-n",
            "2",
            BIN / "lclstreamer",
            "-c",
            config_path,
            "--progress-every",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    total = EVENTS_PER_RANK * 2
    while streamer.poll() is None:
        written = len(list((OUT / "files").glob("*.h5"))) if (OUT / "files").exists() else 0
        done = min(written * 10, total)
        bar = "#" * (30 * done // total)
        print(f"\r[{bar:<30}] {done}/{total} events", end="", flush=True)
        time.sleep(0.3)
    streamer_out, _ = streamer.communicate()
    receiver_out, _ = receiver.communicate(timeout=120)
    print()
    summary = json.loads(receiver_out.strip().splitlines()[-1])
    elapsed = time.monotonic() - started
    print("LCLStream demo: 2 MPI ranks -> ZeroMQ -> receiver -> HDF5 files")
    print(f"  events received : {summary['events']} (of {total} produced)")
    print(f"  data            : {summary['bytes'] / 1e6:.1f} MB in {summary['messages']} messages")
    print(f"  throughput      : {summary['mb_per_s']:.1f} MB/s (receiver)")
    print(f"  first data after: {summary['first_message_s']} s")
    print(f"  wall time       : {elapsed:.1f} s")
    print(f"  files           : {OUT / 'files'} ({summary['files']} HDF5 files)")
    ok = streamer.returncode == 0 and receiver.returncode == 0 and summary["ok"]
    print("  result          : " + ("OK, nothing lost" if ok else f"FAILED {summary}"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
