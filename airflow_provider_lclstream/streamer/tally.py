"""Each rank's running counts in a small file mapping, so that a rank killed outright still
leaves what it had done.

psana dies in C on a corrupt big-data dgram (no Python error, no summary line), MPI then
kills the other ranks, and a cancelled ``srun`` SIGKILLs its ranks, often before they handled
their own SIGTERM: no Python code runs in any of these. With ``LCLSTREAM_TALLY_DIR`` set (the
streamer job sets it), every rank keeps ``<dir>/rank-<N>.json`` mapped: its counters as JSON
after every batch it handed to its handlers, and its event count (an 8-byte integer) after
every event it reads; the kernel keeps a mapped file's pages when the process dies. So a rank
killed outright still leaves the count of every event it read: exact, like the summary it
would have printed (``events`` counts an event when it is read, before it is batched and
sent). Only a tally without that count (a file from an older version) is a lower bound.

A rank that ends on its own or on SIGTERM writes its whole summary there too, marked
``"final": true``. It matters when the job is cancelled: the rank's summary line on stdout can
be lost (``srun`` forwards the ranks' output and may exit before the last line reaches it;
seen under load in CI), the tally file cannot.

``python -m airflow_provider_lclstream.streamer.tally [--wait S] DIR RANKS`` (the streamer job
runs it after a failed or cancelled ``mpiexec``/``srun``) waits up to S seconds for every rank's
final tally (a rank that got SIGTERM may still be writing it when the launcher returns), then
prints each rank's tally as a summary line marked ``"from_tally": true`` (and ``"killed":
true`` for a rank that left no summary), a tally without the event count marked
``"lower_bound": true`` (``transfer/report.py`` reads them all), and one sentence on stderr.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

TALLY_DIR_ENV = "LCLSTREAM_TALLY_DIR"
_LIVE = struct.Struct("<q")
SLOT_BYTES = 2048
"""Two slots, written in turn, each one JSON line padded with NULs: a rank killed while writing
one leaves the other whole; the reader takes the valid slot with the higher ``tally_seq``."""


LIVE_OFFSET = 2 * SLOT_BYTES
"""After the two slots: the rank's event count as one little-endian int64, rewritten at every
event it counts (``Tally.count``, an 8-byte store). A rank killed outright (``srun`` SIGKILLs
the ranks when its job is cancelled, often before they handled their own SIGTERM; MPI kills
the others when one dies) leaves the count of every event it read, not only of its last
batch: its count is exact, not a lower bound."""
TALLY_BYTES = LIVE_OFFSET + 8


def tally_path(directory: str | Path, rank: int) -> Path:
    return Path(directory) / f"rank-{rank:05d}.json"


class Tally:
    """One rank's mapped tally file; ``write`` costs one ``json.dumps`` and a memory copy."""

    def __init__(self, directory: str | Path, rank: int) -> None:
        path = tally_path(directory, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, TALLY_BYTES)
            self._map = mmap.mmap(fd, TALLY_BYTES)
        finally:
            os.close(fd)
        self._seq = 0

    def write(self, summary: dict[str, Any], *, final: bool = False) -> None:
        """The counts as they stand; ``final``: the rank's own summary (it ended, or got
        SIGTERM), exact rather than as of its last batch."""
        self._seq += 1
        extra = {"tally_seq": self._seq, "final": final}
        data = json.dumps({**summary, **extra}).encode() + b"\n"
        if len(data) > SLOT_BYTES:  # the per-handler stats are the only long part
            short = {k: v for k, v in summary.items() if k != "handlers"}
            data = json.dumps({**short, **extra}).encode() + b"\n"
        start = (self._seq % 2) * SLOT_BYTES
        self._map[start : start + SLOT_BYTES] = data[:SLOT_BYTES].ljust(SLOT_BYTES, b"\0")
        self.count(int(summary.get("events") or 0))

    def count(self, events: int) -> None:
        """The rank's event count, at every event (a few hundred nanoseconds)."""
        _LIVE.pack_into(self._map, LIVE_OFFSET, events)

    def close(self) -> None:
        self._map.close()


def open_tally(rank: int) -> Tally | None:
    """This rank's tally when ``LCLSTREAM_TALLY_DIR`` is set, else None (also, with a warning,
    when the file cannot be made: the stream goes on without it)."""
    directory = os.environ.get(TALLY_DIR_ENV)
    if not directory:
        return None
    try:
        return Tally(directory, rank)
    except OSError as err:
        print(f"lclstreamer: rank {rank}: no tally in {directory}: {err}", file=sys.stderr)
        return None


def read_tally(directory: str | Path, rank: int) -> dict[str, Any] | None:
    """The last whole counts rank ``rank`` wrote, or None (no file, or nothing whole in it);
    ``events_counted``: its event count as of its last event (``LIVE_OFFSET``)."""
    try:
        raw = tally_path(directory, rank).read_bytes()
    except OSError:
        return None
    best: dict[str, Any] | None = None
    for start in (0, SLOT_BYTES):
        text = raw[start : start + SLOT_BYTES].split(b"\n", 1)[0]
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict) and (best is None or data["tally_seq"] > best["tally_seq"]):
            best = data
    if best is not None and len(raw) >= TALLY_BYTES:
        best["events_counted"] = _LIVE.unpack_from(raw, LIVE_OFFSET)[0]
    return best


def read_tallies(directory: str | Path, ranks: int, wait_s: float = 0.0) -> dict[int, Any]:
    """Every rank's tally (ranks without one left out), after waiting up to ``wait_s`` seconds
    for all of them to be final."""
    deadline = time.monotonic() + wait_s
    while True:
        found = {rank: read_tally(directory, rank) for rank in range(ranks)}
        tallies = {rank: t for rank, t in found.items() if t is not None}
        if len(tallies) == ranks and all(t.get("final") for t in tallies.values()):
            return tallies
        if time.monotonic() >= deadline:
            return tallies
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """Print every rank's tally as a summary line (a lower bound unless final), and the sum on
    stderr."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_lclstream.streamer.tally",
        description="Print the streamer ranks' tallies as summary lines (after a failed or "
        "cancelled launcher).",
        epilog="example: python -m airflow_provider_lclstream.streamer.tally --wait 3 "
        "lclstreamer-tally 8",
    )
    parser.add_argument("dir", help="the tally directory ($LCLSTREAM_TALLY_DIR of the ranks)")
    parser.add_argument("ranks", type=int, help="how many ranks the run had")
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="S",
        help="wait up to S seconds for every rank's final tally (default: 0)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.ranks < 1 or args.wait < 0:
        parser.error("ranks must be at least 1 and --wait not negative")
    known: dict[int, int] = {}
    bounds: list[int] = []
    for rank, tally in read_tallies(args.dir, args.ranks, args.wait).items():
        counted = tally.pop("events_counted", None)
        if tally.get("final"):
            tally["from_tally"] = True
        elif counted is not None and counted >= int(tally.get("events") or 0):
            tally.update(events=counted, from_tally=True, killed=True)
            tally["error"] = tally.get("error") or "killed: counted to the last event it read"
        else:
            tally["lower_bound"] = True
            tally["error"] = tally.get("error") or "ended without a summary (killed?)"
            bounds.append(rank)
        print(json.dumps(tally), flush=True)
        known[rank] = int(tally.get("events") or 0)
    silent = [rank for rank in range(args.ranks) if rank not in known]
    per_rank = ", ".join(f"rank {rank} {events}" for rank, events in known.items())
    exact = not silent and not bounds
    print(
        f"lclstreamer: failed; events each rank produced: {per_rank or 'none'}"
        + (f" (ranks {bounds} died: as of their last batch)" if bounds else "")
        + f"; {'' if exact else 'at least '}{sum(known.values())} events produced"
        + (f"; ranks {silent} left no tally" if silent else "")
        + ("; " if exact else "; completeness unknown: ")
        + "the receiver's report says what arrived",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
