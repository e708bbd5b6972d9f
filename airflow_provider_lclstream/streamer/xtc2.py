"""Just enough of the xtc2 file format to walk a file dgram by dgram, without psana.

A dgram starts with a 24-byte header: the timestamp (``uint64``: seconds << 32 | nanoseconds),
the pulse id word whose byte 11 holds the transition id (``TransitionId`` in psana), the
environment word, and the top-level Xtc (source, damage, type, ``extent``). The whole dgram is
``12 + extent`` bytes (the extent counts the Xtc header itself). Big-data and smalldata files of
one stream hold the same dgrams in the same order: ``smdwriter`` writes one small dgram (the
offset and size of the big one) per big dgram.
"""

from __future__ import annotations

import glob
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    from collections.abc import Callable

HEADER_BYTES = 24
EXTENT_OFFSET = 20
#: psana's TransitionId values that matter here.
CONFIGURE, BEGIN_RUN, END_RUN, L1_ACCEPT = 2, 4, 5, 12
SERVICE_NAMES = {
    0: "ClearReadout", 1: "Reset", 2: "Configure", 3: "Unconfigure", 4: "BeginRun", 5: "EndRun",
    6: "BeginStep", 7: "EndStep", 8: "Enable", 9: "Disable", 10: "SlowUpdate",
    11: "L1Accept_EndOfBatch", 12: "L1Accept",
}  # fmt: skip
STREAM_NAME = re.compile(r"-s(\d{3})-c(\d{3})\.xtc2$")


class CorruptDgramError(LCLStreamError):
    """A dgram header that does not fit its file; the message names the file and offset."""


@dataclass(frozen=True)
class DgramInfo:
    offset: int
    size: int
    service: int
    timestamp: int

    @property
    def is_l1(self) -> bool:
        return self.service == L1_ACCEPT


def scan(path: str | Path, data: bytes | None = None) -> list[DgramInfo]:
    """Every dgram of ``path`` (or of ``data``, its bytes) in file order; a truncated or
    impossible one raises :class:`CorruptDgramError` naming the file and the byte offset.

    From a file only the headers are read (a big-data file of many GB is walked cheaply)."""
    if data is not None:
        view = data
        return _walk(path, len(view), lambda offset, n: view[offset : offset + n])
    with open(path, "rb") as f:
        fd = f.fileno()
        return _walk(path, os.fstat(fd).st_size, lambda offset, n: os.pread(fd, n, offset))


def _walk(path: str | Path, size: int, read: Callable[[int, int], bytes]) -> list[DgramInfo]:
    out: list[DgramInfo] = []
    offset = 0
    while offset < size:
        header = read(offset, HEADER_BYTES)
        if len(header) < HEADER_BYTES:
            raise CorruptDgramError(
                f"{path}: truncated dgram header at byte offset {offset} "
                f"({size - offset} of {HEADER_BYTES} bytes; {len(out)} dgrams before it)"
            )
        timestamp, pulse = struct.unpack_from("<QQ", header)
        (extent,) = struct.unpack_from("<I", header, EXTENT_OFFSET)
        dgram_size = 12 + extent
        service = (pulse >> 24) & 0xF
        if extent < 12 or offset + dgram_size > size or service not in SERVICE_NAMES:
            raise CorruptDgramError(
                f"{path}: corrupt dgram at byte offset {offset} (extent {extent}, transition "
                f"id {service}, file size {size}; {len(out)} good dgrams before it)"
            )
        out.append(DgramInfo(offset, dgram_size, service, timestamp))
        offset += dgram_size
    return out


@dataclass(frozen=True)
class StreamFiles:
    """One stream of a run: its big-data file and its smalldata file (psana's run layout)."""

    stream: int
    bigdata: Path
    smalldata: Path | None


def run_pattern(exp: str, run: int) -> str:
    return f"{exp}-r{int(run):04d}-s*-c000.xtc2"


def find_run(directory: str | Path, exp: str, run: int) -> list[StreamFiles]:
    """The streams of ``exp`` run ``run`` in ``directory`` (``xtc/`` of psana's layout, with
    ``smalldata/`` inside); none found raises an error naming the directory and pattern."""
    directory = Path(directory)
    pattern = run_pattern(exp, run)
    found = sorted(glob.glob(os.path.join(directory, pattern)))
    if not found:
        raise LCLStreamError(
            f"run not found: no file {pattern} in {directory} "
            f"(psana's layout: {directory}/{exp}-r{int(run):04d}-s000-c000.xtc2 and "
            f"{directory}/smalldata/{exp}-r{int(run):04d}-s000-c000.smd.xtc2)"
        )
    streams = []
    for path in found:
        match = STREAM_NAME.search(path)
        assert match is not None
        smd = directory / "smalldata" / (Path(path).name[: -len(".xtc2")] + ".smd.xtc2")
        streams.append(StreamFiles(int(match.group(1)), Path(path), smd if smd.exists() else None))
    return streams


def has_smalldata(directory: str | Path, exp: str, run: int) -> bool:
    """True when ``directory/smalldata`` holds the run's smalldata (final or ``.inprogress``)."""
    stem = os.path.join(directory, "smalldata", f"{exp}-r{int(run):04d}-s*.smd.xtc2")
    return bool(glob.glob(stem) or glob.glob(stem + ".inprogress"))


def run_files(directory: str | Path, exp: str, run: int) -> list[str]:
    """The run's smalldata and big-data files in ``directory`` (final or ``.inprogress``)."""
    stem = f"{exp}-r{int(run):04d}-s*"
    return sorted(
        glob.glob(os.path.join(directory, "smalldata", stem + ".smd.xtc2*"))
        + glob.glob(os.path.join(directory, stem + ".xtc2*"))
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m airflow_provider_lclstream.streamer.xtc2 DIR EXP RUN``: walk every file of
    the run and name each corrupt dgram (file, offset) on stderr; exit 1 when there is one.

    The streamer job runs it after a failed ``mpiexec`` (transfer/jobs.py): psana dies in C on
    a corrupt big-data dgram, so the streamer itself cannot say which one it was."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m airflow_provider_lclstream.streamer.xtc2")
    parser.add_argument("dir")
    parser.add_argument("exp")
    parser.add_argument("run", type=int)
    args = parser.parse_args(argv)
    paths = run_files(args.dir, args.exp, args.run)
    if not paths:
        print(f"xtc2: run not found: no file {run_pattern(args.exp, args.run)} in {args.dir}",
              file=sys.stderr)  # fmt: skip
        return 2
    corrupt = 0
    for path in paths:
        try:
            scan(path)
        except CorruptDgramError as err:
            corrupt += 1
            print(f"xtc2: {err}", file=sys.stderr)
    if not corrupt:
        print(f"xtc2: {len(paths)} files of {args.exp} run {args.run}: no corrupt dgram",
              file=sys.stderr)  # fmt: skip
    return 1 if corrupt else 0


if __name__ == "__main__":
    raise SystemExit(main())
