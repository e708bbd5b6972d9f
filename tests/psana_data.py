"""Make xtc2 data with psana's ``xtcwriter`` (installed in site-packages/bin, not on PATH)."""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path


def xtcwriter_path() -> Path:
    path = Path(sysconfig.get_paths()["purelib"]) / "bin" / "xtcwriter"
    if not path.exists():
        raise RuntimeError(
            "psana's xtcwriter not found: install psana2 with "
            "`apt-get install libkrb5-dev && pip install 'airflow-provider-lclstream[psana]'`"
        )
    return path


def write_xtc2(path: Path, events: int = 10) -> Path:
    """Write ``events`` events of psana's test detectors (xppcspad, xpphsd, epics) to ``path``."""
    result = subprocess.run(
        [str(xtcwriter_path()), "-f", str(path), "-n", str(events)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(f"xtcwriter failed ({result.returncode}): {result.stderr[-1000:]}")
    return path


def smdwriter_path() -> Path:
    return xtcwriter_path().parent / "smdwriter"


def write_run(xtc_dir: Path, exp: str, run: int, streams: int = 2, events: int = 10) -> Path:
    """A run in psana's layout, as the DAQ leaves it: ``xtc_dir/<exp>-r<run:04d>-s<NNN>-c000.xtc2``
    per stream and ``xtc_dir/smalldata/...smd.xtc2`` made from it by ``smdwriter``.

    Each stream holds two detector segments of its own (``xtcwriter -s 2*stream``) and the same
    counting timestamps (``-t``), so psana builds ``events`` events from all streams (as
    psana's own tests do). Returns ``xtc_dir``."""
    (xtc_dir / "smalldata").mkdir(parents=True, exist_ok=True)
    for stream in range(streams):
        name = f"{exp}-r{run:04d}-s{stream:03d}-c000"
        big = xtc_dir / f"{name}.xtc2"
        for command in (
            [str(xtcwriter_path()), "-f", str(big), "-t", "-s", str(2 * stream), "-n", str(events)],
            [
                str(smdwriter_path()),
                "-f",
                str(big),
                "-o",
                str(xtc_dir / "smalldata" / f"{name}.smd.xtc2"),
            ],
        ):
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            if result.returncode != 0:
                raise RuntimeError(f"{command[0]} failed: {result.stderr[-1000:]}")
    return xtc_dir
