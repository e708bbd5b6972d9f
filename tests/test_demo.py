"""`make demo` works: the README's first command, with fewer events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.airflow
@pytest.mark.mpi
def test_demo_streams_every_event_and_draws_the_plot() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/demo.py"), "--events", "20"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "events           : 40 of 40, skipped 0, lost 0" in result.stdout
    assert "OK, every event delivered" in result.stdout
    assert (REPO / "demo-output/throughput.png").stat().st_size > 1000
