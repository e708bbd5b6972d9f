"""Each rank's running counts in a small file mapping, so that a rank killed outright still
leaves what it had done.

psana dies in C on a corrupt big-data dgram (no Python error, no summary line), and MPI then
kills the other ranks, often while they wait in C where no Python signal handler runs. With
``LCLSTREAM_TALLY_DIR`` set (the streamer job sets it), every rank rewrites its counters in
``<dir>/rank-<N>.json`` after every batch it handed to its handlers; the kernel keeps a mapped
file's pages when the process dies. The counts are as of the rank's last batch, so for a rank
that died they are a lower bound of what it produced (events read into a batch that was never
finished are not in them).

``python -m airflow_provider_lclstream.streamer.tally DIR RANKS`` (the streamer job runs it
after a failed ``mpiexec``) prints each rank's tally as a summary line marked
``"lower_bound": true`` (``transfer/report.py`` reads them) and one sentence on stderr.
"""

from __future__ import annotations

import json
import mmap
import os
import sys
from pathlib import Path
from typing import Any

TALLY_DIR_ENV = "LCLSTREAM_TALLY_DIR"
SLOT_BYTES = 2048
"""Two slots, written in turn, each one JSON line padded with NULs: a rank killed while writing
one leaves the other whole; the reader takes the valid slot with the higher ``tally_seq``."""


def tally_path(directory: str | Path, rank: int) -> Path:
    return Path(directory) / f"rank-{rank:05d}.json"


class Tally:
    """One rank's mapped tally file; ``write`` costs one ``json.dumps`` and a memory copy."""

    def __init__(self, directory: str | Path, rank: int) -> None:
        path = tally_path(directory, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, 2 * SLOT_BYTES)
            self._map = mmap.mmap(fd, 2 * SLOT_BYTES)
        finally:
            os.close(fd)
        self._seq = 0

    def write(self, summary: dict[str, Any]) -> None:
        self._seq += 1
        data = json.dumps({**summary, "tally_seq": self._seq}).encode() + b"\n"
        if len(data) > SLOT_BYTES:  # the per-handler stats are the only long part
            short = {k: v for k, v in summary.items() if k != "handlers"}
            data = json.dumps({**short, "tally_seq": self._seq}).encode() + b"\n"
        start = (self._seq % 2) * SLOT_BYTES
        self._map[start : start + SLOT_BYTES] = data[:SLOT_BYTES].ljust(SLOT_BYTES, b"\0")

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
    """The last whole counts rank ``rank`` wrote, or None (no file, or nothing whole in it)."""
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
    return best


def main(argv: list[str] | None = None) -> int:
    """Print every rank's tally as a lower-bound summary line, and the sum on stderr."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m airflow_provider_lclstream.streamer.tally")
    parser.add_argument("dir")
    parser.add_argument("ranks", type=int)
    args = parser.parse_args(argv)
    known: dict[int, int] = {}
    for rank in range(args.ranks):
        tally = read_tally(args.dir, rank)
        if tally is None:
            continue
        tally["lower_bound"] = True
        tally["error"] = tally.get("error") or "ended without a summary (killed?)"
        print(json.dumps(tally), flush=True)
        known[rank] = int(tally.get("events") or 0)
    silent = [rank for rank in range(args.ranks) if rank not in known]
    per_rank = ", ".join(f"rank {rank} {events}" for rank, events in known.items())
    print(
        f"lclstreamer: failed; events each rank had handed on as of its last batch (lower "
        f"bounds for a rank that died): {per_rank or 'none'}; at least {sum(known.values())} "
        f"events produced" + (f"; ranks {silent} left no tally" if silent else "") + "; "
        "completeness unknown: the receiver's report says what arrived",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
