"""Live mode latency and smd parallel speed-up, on real psana2 + MPI (no Airflow).

    .venv/bin/python bench/live.py [--events 600] [--rate 120] [--ranks 4]

1. ``lclstream-replay`` writes a 2-stream run (xtcwriter + smdwriter) at ``--rate`` Hz while
   ``mpiexec -n RANKS lclstreamer`` follows it in psana2 live mode (the FAKE Elog lists the
   run's files) and a receiver takes every event: the time from each L1Accept's smalldata dgram
   written to its arrival, p50 and p99. The streamer starts before the first dgram is written.
2. The finished run read by psana's parallel smd mode (RANKS ranks) and by the serial reader
   (1 rank): events/s of each (events / the slowest rank's elapsed time) and their ratio.

Ends with one ``key=value`` line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from tests.integration.streaming import (  # noqa: E402
    BackgroundReceiver,
    free_port,
    run_streamer,
    total_line,
)
from tests.live_run import BIN, live_config, percentile, run_live  # noqa: E402
from tests.psana_data import write_run  # noqa: E402


def smd_rate(run_dir: Path, ranks: int, work: Path) -> float:
    url = f"tcp://127.0.0.1:{free_port()}"
    config = live_config(f"exp=xpptut15,run=50,dir={run_dir}", url, {"batch_size": 10})
    config["processing_pipeline"]["batch_size"] = 10
    path = work / f"smd-{ranks}.yaml"
    path.write_text(yaml.safe_dump(config))
    receiver = BackgroundReceiver(url, "zmq", bind=True, producers=ranks)
    result = run_streamer(str(BIN / "mpiexec"), ranks, path, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"smd run with {ranks} ranks failed: {result.stderr[-2000:]}")
    receiver.join()
    total = total_line(result.stdout)
    return total["events"] / total["elapsed_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--rate", type=float, default=120.0)
    parser.add_argument("--ranks", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_dir = write_run(work / "rec" / "xtc", "xpptut15", 50, streams=2, events=args.events)
        live = run_live(
            run_dir, work / "live" / "xtc", "xpptut15", 50, as_run=51, ranks=args.ranks,
            rate_hz=args.rate, start_delay_s=8.0, port=free_port(), timeout_s=600,
        )  # fmt: skip
        if live.streamer.returncode != 0:
            raise SystemExit(f"live run failed: {live.streamer.stderr[-2000:]}")
        latencies = live.latencies()
        arrived = [ts for ts, _ in live.arrivals.times]
        exactly_once = sorted(arrived) == sorted(ts for ts, _ in live.replay.l1_written)
        parallel = smd_rate(run_dir, args.ranks, work)
        serial = smd_rate(run_dir, 1, work)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"live: {len(arrived)} of {live.replay.l1} events, exactly once: {exactly_once}")
    print(f"smd: parallel {parallel:.1f} ev/s ({args.ranks} ranks), serial {serial:.1f} ev/s")
    print(
        f"live_p50_s={p50:.3f} live_p99_s={p99:.3f} live_events={len(arrived)} "
        f"exactly_once={int(exactly_once)} smd_parallel_ev_s={parallel:.1f} "
        f"smd_serial_ev_s={serial:.1f} smd_ratio={parallel / serial:.2f} ranks={args.ranks} "
        f"rate_hz={args.rate:g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
