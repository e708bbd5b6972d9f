"""``lclstream-replay``: write a recorded run again as the DAQ writes it, for live-mode rehearsals.

For every dgram of the run (all streams merged in timestamp order) it appends the whole big-data
dgram to ``<dest>/<exp>-r<run>-s<stream>-c000.xtc2.inprogress``, then the smalldata dgram that
points into it to ``<dest>/smalldata/....smd.xtc2.inprogress``: a reader that sees the small
dgram always finds its big data. L1Accepts are paced at ``--rate`` per second; transitions go
out at once. After EndRun the files are renamed to their final names (big data first), which is
how psana's live mode knows the run is complete. With ``--kafka`` it publishes the Elog's
run-start message before the first dgram and the run-end message after the rename.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.exceptions import LCLStreamError, MissingDependencyError
from airflow_provider_lclstream.streamer.xtc2 import (
    SERVICE_NAMES,
    DgramInfo,
    StreamFiles,
    find_run,
    scan,
)

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)
INPROGRESS = ".inprogress"


@dataclass
class ReplayStats:
    streams: int = 0
    dgrams: int = 0
    #: L1Accept events written (one per timestamp, over all streams)
    l1: int = 0
    bytes: int = 0
    first_l1_s: float | None = None
    elapsed_s: float = 0.0
    #: (timestamp, time.time() after its smalldata dgram was written) of each L1Accept
    l1_written: list[tuple[int, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "l1_written"}


@dataclass
class _Stream:
    files: StreamFiles
    big: bytes
    small: bytes
    big_dgrams: list[DgramInfo]
    small_dgrams: list[DgramInfo]


def load_streams(source: Path, exp: str, run: int) -> list[_Stream]:
    streams = []
    for files in find_run(source, exp, run):
        if files.smalldata is None:
            raise LCLStreamError(
                f"{files.bigdata}: no smalldata file {source}/smalldata/"
                f"{files.bigdata.name[:-5]}.smd.xtc2 (make it with psana's smdwriter)"
            )
        big = files.bigdata.read_bytes()
        small = files.smalldata.read_bytes()
        big_dgrams, small_dgrams = scan(files.bigdata, big), scan(files.smalldata, small)
        if [d.timestamp for d in big_dgrams] != [d.timestamp for d in small_dgrams]:
            raise LCLStreamError(
                f"{files.smalldata} does not match {files.bigdata} dgram for dgram "
                f"({len(small_dgrams)} vs {len(big_dgrams)} dgrams)"
            )
        streams.append(_Stream(files, big, small, big_dgrams, small_dgrams))
    return streams


def merged(streams: list[_Stream]) -> list[tuple[int, int]]:
    """(stream index, dgram index) in timestamp order, transitions of equal time together."""
    order = [(d.timestamp, i, j) for i, s in enumerate(streams) for j, d in enumerate(s.big_dgrams)]
    order.sort()
    return [(i, j) for _, i, j in order]


class KafkaRunMessages:
    """Publish the Elog's run messages (topic ``runs``) the way the Elog does."""

    def __init__(self, bootstrap: str, topic: str = "runs") -> None:
        try:
            from kafka import KafkaProducer
        except ImportError as err:
            raise MissingDependencyError(
                "kafka-python", "airflow", "lclstream-replay --kafka"
            ) from err
        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap)

    def send(self, message: dict[str, Any]) -> None:
        self.producer.send(self.topic, json.dumps(message).encode()).get(timeout=30)

    def run_start(self, exp: str, run: int) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        value = {"num": run, "begin_time": now, "type": "DATA", "params": {}}
        self.send({"experiment_name": exp, "CRUD": "Create", "value": value})

    def run_end(self, exp: str, run: int) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        value = {"num": run, "end_time": now, "type": "DATA"}
        self.send({"experiment_name": exp, "CRUD": "Update", "value": value})

    def close(self) -> None:
        self.producer.close()


def _timestamp(streams: list[_Stream], at: tuple[int, int]) -> int:
    return streams[at[0]].big_dgrams[at[1]].timestamp


def replay(
    source: str | Path,
    dest: str | Path,
    exp: str,
    run: int,
    *,
    rate_hz: float = 120.0,
    dest_run: int | None = None,
    start_delay_s: float = 0.0,
    on_start: Callable[[], None] | None = None,
    on_end: Callable[[], None] | None = None,
) -> ReplayStats:
    """Replay ``exp`` run ``run`` from ``source`` into ``dest`` (as run ``dest_run``)."""
    if rate_hz <= 0:
        raise LCLStreamError(f"--rate must be > 0 events per second, got {rate_hz}")
    source, dest = Path(source), Path(dest)
    out_run = run if dest_run is None else dest_run
    streams = load_streams(source, exp, run)
    (dest / "smalldata").mkdir(parents=True, exist_ok=True)
    final_names: list[tuple[Path, Path]] = []
    fds: list[tuple[int, int]] = []
    for s in streams:
        name = f"{exp}-r{out_run:04d}-s{s.files.stream:03d}-c000"
        big_path = dest / f"{name}.xtc2"
        small_path = dest / "smalldata" / f"{name}.smd.xtc2"
        for path in (big_path, small_path):
            if path.exists() or Path(str(path) + INPROGRESS).exists():
                raise LCLStreamError(f"{path} already exists: replay into an empty directory")
        final_names += [(big_path, Path(str(big_path) + INPROGRESS))]
        final_names += [(small_path, Path(str(small_path) + INPROGRESS))]
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL
        fds.append(
            (
                os.open(str(big_path) + INPROGRESS, flags, 0o644),
                os.open(str(small_path) + INPROGRESS, flags, 0o644),
            )
        )
    stats = ReplayStats(streams=len(streams))
    if on_start:
        on_start()
    if start_delay_s:
        time.sleep(start_delay_s)
    started = time.monotonic()
    order = merged(streams)
    try:
        for n, (i, j) in enumerate(order):
            s = streams[i]
            big, small = s.big_dgrams[j], s.small_dgrams[j]
            first_of_event = n == 0 or _timestamp(streams, order[n - 1]) != big.timestamp
            if big.is_l1 and first_of_event:  # one event: the dgrams of all streams
                due = started + stats.l1 / rate_hz
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            big_fd, small_fd = fds[i]
            os.write(big_fd, s.big[big.offset : big.offset + big.size])
            os.write(small_fd, s.small[small.offset : small.offset + small.size])
            stats.dgrams += 1
            stats.bytes += big.size + small.size
            last_of_event = (
                n + 1 == len(order) or _timestamp(streams, order[n + 1]) != big.timestamp
            )
            if big.is_l1 and last_of_event:
                stats.l1 += 1
                stats.l1_written.append((big.timestamp, time.time()))
                if stats.first_l1_s is None:
                    stats.first_l1_s = round(time.monotonic() - started, 3)
            log.debug("wrote %s of stream %d", SERVICE_NAMES[big.service], s.files.stream)
    finally:
        for big_fd, small_fd in fds:
            os.close(big_fd)
            os.close(small_fd)
    for final, inprogress in final_names:
        os.rename(inprogress, final)
    stats.elapsed_s = round(time.monotonic() - started, 3)
    if on_end:
        on_end()
    return stats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lclstream-replay",
        description="Replay a recorded LCLS-II run as the DAQ writes it: whole dgrams appended "
        "to .xtc2.inprogress files at a given L1Accept rate (big data before the smalldata that "
        "points into it), renamed to their final names at EndRun. Use it to rehearse a live "
        "pipeline (access_mode: live) before beamtime.",
        epilog="examples:\n"
        "  lclstream-replay --source /data/xtc --exp xpptut15 --run 14 --dest /tmp/live/xtc\n"
        "  lclstream-replay --source /data/xtc --exp xpptut15 --run 14 --dest /tmp/live/xtc \\\n"
        "      --as-run 15 --rate 120 --kafka 127.0.0.1:9092 --timeline written.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source", required=True, help="the recorded run's xtc/ directory")
    parser.add_argument("--exp", required=True, help="experiment, e.g. xpptut15")
    parser.add_argument("--run", required=True, type=int, help="run number to replay")
    parser.add_argument("--dest", required=True, help="xtc/ directory to write (smalldata/ in it)")
    parser.add_argument("--as-run", type=int, default=None, help="run number written (--run)")
    parser.add_argument("--rate", type=float, default=120.0, help="L1Accepts per second (120)")
    parser.add_argument(
        "--start-delay", type=float, default=0.0, help="seconds between run start and first dgram"
    )
    parser.add_argument(
        "--kafka", metavar="HOST:PORT", help="publish the Elog run start/end on this Kafka"
    )
    parser.add_argument("--topic", default="runs", help="Kafka topic of run messages (runs)")
    parser.add_argument(
        "--timeline", help="write one JSON line per L1Accept: timestamp and wall time written"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_out = args.as_run if args.as_run is not None else args.run
    kafka: KafkaRunMessages | None = None
    try:
        if args.kafka:
            kafka = KafkaRunMessages(args.kafka, args.topic)
        on_start = (lambda: kafka.run_start(args.exp, run_out)) if kafka else None
        on_end = (lambda: kafka.run_end(args.exp, run_out)) if kafka else None
        stats = replay(
            args.source,
            args.dest,
            args.exp,
            args.run,
            rate_hz=args.rate,
            dest_run=args.as_run,
            start_delay_s=args.start_delay,
            on_start=on_start,
            on_end=on_end,
        )
    except (LCLStreamError, OSError) as err:
        print(f"lclstream-replay: {err}", file=sys.stderr)
        return 1
    finally:
        if kafka is not None:
            kafka.close()
    if args.timeline:
        with open(args.timeline, "w", encoding="utf-8") as out:
            for ts, at in stats.l1_written:
                out.write(json.dumps({"timestamp": ts, "written": at}) + "\n")
    print(json.dumps(stats.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
