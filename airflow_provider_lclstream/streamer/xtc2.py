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

from airflow_provider_lclstream.exceptions import LCLStreamError

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
    """Every dgram of ``path`` in file order; a truncated or impossible one raises
    :class:`CorruptDgramError` naming the file and the byte offset."""
    if data is None:
        data = Path(path).read_bytes()
    out: list[DgramInfo] = []
    offset = 0
    while offset < len(data):
        if offset + HEADER_BYTES > len(data):
            raise CorruptDgramError(
                f"{path}: truncated dgram header at byte offset {offset} "
                f"({len(data) - offset} of {HEADER_BYTES} bytes; {len(out)} dgrams before it)"
            )
        timestamp, pulse = struct.unpack_from("<QQ", data, offset)
        (extent,) = struct.unpack_from("<I", data, offset + EXTENT_OFFSET)
        size = 12 + extent
        service = (pulse >> 24) & 0xF
        if extent < 12 or offset + size > len(data) or service not in SERVICE_NAMES:
            raise CorruptDgramError(
                f"{path}: corrupt dgram at byte offset {offset} (extent {extent}, transition "
                f"id {service}, file size {len(data)}; {len(out)} good dgrams before it)"
            )
        out.append(DgramInfo(offset, size, service, timestamp))
        offset += size
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
