"""xtc2 runs whose detector and EPICS variable names are the ones a config asks for.

psana's ``xtcwriter`` writes fixed names: a ``cspad`` detector ``xppcspad`` (``raw.raw``,
``raw.calib``, ``raw.image``), an ``hsd`` detector ``xpphsd`` (``raw.calib`` only) and two EPICS
variables, ``HX2:DVD:GCC:01:PMON`` and ``HX2:DVD:GPI:01:PMON`` (values from the second
SlowUpdate on: every 4 events). Upstream's examples ask for ``jungfrau`` and
``SIOC:SYS0:ML00:AO192``. Rather than edit the example, rename in the data: each name lives in
the Configure transition only, in a fixed, NUL-padded char array of ``MaxNameSize`` (256) bytes
(the ``Names`` record's detector name; each ``Name``'s variable name, in the ``epics`` and the
``epicsinfo`` records alike), and the events refer to their detector by ``NamesId``, never by
name. Only the name changes: a renamed ``xppcspad`` is still of psana's ``cspad`` type, with that
type's fields, and the BeginRun record keeps xtcwriter's ``xpptut15``, run 14 (what
``run.expt``/``run.runnum`` say). ``smdwriter`` then makes the smalldata from the renamed file,
as psana's layout wants.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from airflow_provider_lclstream.streamer.xtc2 import CONFIGURE, scan
from tests.psana_data import smdwriter_path, xtcwriter_path

MAX_NAME_SIZE = 256
"""``XtcData::MaxNameSize``: the char arrays holding a detector's and a variable's name."""
CSPAD = "xppcspad"
"""xtcwriter's area detector (psana type ``cspad``: ``raw.raw`` (2, 3, 6) uint16, ``raw.image``)."""
HSD = "xpphsd"
"""xtcwriter's digitizer (psana type ``hsd`` version 0.0.0: only ``raw.calib``)."""
PVS = ("HX2:DVD:GCC:01:PMON", "HX2:DVD:GPI:01:PMON")
"""xtcwriter's EPICS variables."""


def rename_in_configure(path: Path, renames: dict[str, str]) -> dict[str, int]:
    """Rename detectors and EPICS variables in ``path``'s Configure dgram, in place.

    Each old name is replaced wherever it fills a name field: a 4-byte aligned, NUL-terminated
    string followed by NUL padding to at least the new name's length. Returns how many fields
    each old name filled; an old name found nowhere, or a new name that does not fit, raises.
    """
    data = bytearray(path.read_bytes())
    configure = next((d for d in scan(path) if d.service == CONFIGURE), None)
    if configure is None:
        raise ValueError(f"{path}: no Configure transition")
    start, end = configure.offset, configure.offset + configure.size
    counts: dict[str, int] = {}
    for old, new in renames.items():
        if not 0 < len(new.encode()) < MAX_NAME_SIZE:
            raise ValueError(f"new name {new!r}: 1 to {MAX_NAME_SIZE - 1} bytes")
        needle, value = old.encode() + b"\0", new.encode()
        at = data.find(needle, start, end)
        while at != -1:
            tail = bytes(data[at + len(needle) - 1 : at + len(value) + 1])
            if at % 4 == 0 and (at == start or data[at - 1] == 0) and not tail.strip(b"\0"):
                data[at : at + len(value) + 1] = value + b"\0"
                data[at + len(value) + 1 : at + len(needle)] = bytes(
                    max(0, len(needle) - len(value) - 1)
                )
                counts[old] = counts.get(old, 0) + 1
            at = data.find(needle, at + 1, end)
        if not counts.get(old):
            raise ValueError(f"{path}: no name field holds {old!r}")
    path.write_bytes(bytes(data))
    return counts


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr[-1000:]}")


def write_named_run(
    xtc_dir: Path, exp: str, run: int, renames: dict[str, str], events: int = 10
) -> Path:
    """One stream of run ``run`` of ``exp`` in psana's layout (``dir=xtc_dir``), written by
    ``xtcwriter`` with ``renames`` applied, smalldata made by ``smdwriter``. Returns ``xtc_dir``."""
    (xtc_dir / "smalldata").mkdir(parents=True, exist_ok=True)
    name = f"{exp}-r{run:04d}-s000-c000"
    big = xtc_dir / f"{name}.xtc2"
    _run([str(xtcwriter_path()), "-f", str(big), "-t", "-n", str(events)])
    if renames:
        rename_in_configure(big, renames)
    _run(
        [
            str(smdwriter_path()),
            "-f",
            str(big),
            "-o",
            str(xtc_dir / "smalldata" / f"{name}.smd.xtc2"),
        ]
    )
    return xtc_dir
