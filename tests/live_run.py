"""A live run on real pieces: ``lclstream-replay`` writes a run while ``mpiexec lclstreamer``
follows it with psana2's live mode and a receiver collects every event (tests and bench/live.py).

The logbook is the project's FAKE Elog (tests/fake_elog.py), which lists the run's files the way
the LCLS logbook does for live mode.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import yaml

from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages
from airflow_provider_lclstream.streamer.replay import ReplayStats, replay
from tests.fake_elog import FakeElog

BIN = Path(sys.executable).parent


def live_config(source_identifier: str, url: str, knobs: dict[str, Any] | None = None) -> dict:
    return {
        "source_identifier": source_identifier,
        "skip_incomplete_events": True,
        "event_source": {"type": "Psana2EventSource", "knobs": knobs or {}},
        "data_sources": {
            "timestamp": {"type": "Psana2Timestamp"},
            "detector_data": {
                "type": "Psana2DetectorInterface",
                "psana_name": "xppcspad",
                "psana_fields": "raw.raw",
            },
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 1},
        "data_serializer": {
            "type": "HDF5BinarySerializer",
            "fields": {"timestamp": "/timestamp", "detector_data": "/data"},
        },
        "data_handlers": [
            {"type": "BinaryDataStreamingDataHandler", "urls": [url], "library": "zmq"}
        ],
    }


@dataclass
class Arrivals:
    """Every event the receiver got: timestamp -> wall time of arrival (all of them)."""

    report: ReceiveReport
    times: list[tuple[int, float]] = field(default_factory=list)

    def collect(self, url: str, producers: int, timeout_s: float) -> None:
        for message in receive_messages(
            url, "zmq", bind=True, expect_producers=producers, timeout_s=timeout_s,
            report=self.report,
        ):  # fmt: skip
            with h5py.File(io.BytesIO(message.raw)) as f:
                for ts in f["/timestamp"][()].reshape(-1):
                    self.times.append((int(ts), message.received_at))


@dataclass
class LiveResult:
    replay: ReplayStats
    arrivals: Arrivals
    streamer: subprocess.CompletedProcess
    replay_ended_at: float

    def latencies(self) -> list[float]:
        """Seconds from each L1Accept's smalldata dgram written to its arrival (first arrival)."""
        written = dict(self.replay.l1_written)
        seen: dict[int, float] = {}
        for ts, at in self.arrivals.times:
            seen.setdefault(ts, at)
        return sorted(at - written[ts] for ts, at in seen.items() if ts in written)


def run_live(
    source_dir: Path,
    dest_dir: Path,
    exp: str,
    run: int,
    *,
    as_run: int,
    ranks: int = 4,
    rate_hz: float = 120.0,
    knobs: dict[str, Any] | None = None,
    start_delay_s: float = 3.0,
    timeout_s: float = 180.0,
    port: int,
) -> LiveResult:
    """Replay ``run`` as ``as_run`` into ``dest_dir`` while ``ranks`` streamer ranks follow it.

    As at the DAQ, the run's ``.inprogress`` files exist (empty) before the streamer starts and
    psana is told about them (psana gives up at once on listed files that do not exist yet, as
    seen in clean-clone CI runs). The first dgram is written ``start_delay_s`` after psana first
    asks the (fake) logbook for the run's files, i.e. once the streamer is up, however long its
    start takes on a loaded machine (at most ``timeout_s``): the first dgram is always written
    while the streamer is following."""
    fake = FakeElog().start()
    url = f"tcp://127.0.0.1:{port}"
    arrivals = Arrivals(ReceiveReport(ranks))
    receiver = threading.Thread(target=arrivals.collect, args=(url, ranks, timeout_s), daemon=True)
    receiver.start()
    streams = sorted(p.name for p in source_dir.glob(f"{exp}-r{run:04d}-s*-c000.xtc2"))
    fake.add_run_files(
        exp, as_run, [f"/{exp[:3]}/{exp}/xtc/{n.replace(f'-r{run:04d}-', f'-r{as_run:04d}-')}"
                      for n in streams],
    )  # fmt: skip
    dest_dir.mkdir(parents=True, exist_ok=True)
    config_path = dest_dir.parent / f"live-{as_run}.yaml"
    ident = f"exp={exp},run={as_run},dir={dest_dir},live=1"
    config_path.write_text(yaml.safe_dump(live_config(ident, url, knobs)))
    env = {**os.environ, "LCLSTREAM_LOGBOOK_URL": fake.url}
    replay_box: dict[str, Any] = {}

    files_created = threading.Event()

    def wait_for_psana() -> None:  # the files exist: let the streamer start, then follow
        files_created.set()
        deadline = time.monotonic() + timeout_s
        while not fake.gets and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(start_delay_s)

    def write() -> None:
        replay_box["stats"] = replay(
            source_dir, dest_dir, exp, run, rate_hz=rate_hz, dest_run=as_run,
            on_start=wait_for_psana,
        )  # fmt: skip
        replay_box["ended"] = time.time()

    writer = threading.Thread(target=write, daemon=True)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        writer.start()
        if not files_created.wait(60):
            raise RuntimeError("the replay did not create the run's files within 60 s")
        streamer = subprocess.run(
            [str(BIN / "mpiexec"), "-n", str(ranks), str(BIN / "lclstreamer"), "-c",
             str(config_path), "--progress-every", "60"],
            capture_output=True, text=True, timeout=timeout_s, env=env,
        )  # fmt: skip
        writer.join(timeout_s)
        receiver.join(30)
    finally:
        fake.stop()
    return LiveResult(replay_box["stats"], arrivals, streamer, replay_box.get("ended", 0.0))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
