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
