"""`make demo` works and tells the truth: the README's first command, with fewer events.

One real run (Airflow ``dag.test()``, local jobs, a 2-rank MPI streamer); the checks read what
it printed against the consumer's per-message records, which the tests read themselves.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from airflow_provider_lclstream.consumer.records import RECORDS_SUFFIX, MessageRecord, read_records

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "scripts/demo.py"
OUT = REPO / "demo-output"
EVENTS = 20  # per rank: 2 messages of 10 events from each of the 2 ranks
LINE = re.compile(r"^\[\s*(\d+\.\d) s\] (.*)$")

pytestmark = [pytest.mark.airflow, pytest.mark.mpi]


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lclstream_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    return load_demo()


@pytest.fixture(scope="module")
def run() -> str:
    """The demo's stdout (it must succeed)."""
    result = subprocess.run(
        [sys.executable, str(DEMO), "--events", str(EVENTS)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def records(run: str) -> list[MessageRecord]:
    paths = sorted((OUT / "files").glob(f"*/consumer-*/*{RECORDS_SUFFIX}"))
    assert len(paths) == 1, paths
    return read_records(paths[0])


def summary_value(stdout: str, name: str) -> str:
    """The text after ``name :`` in the summary."""
    match = re.search(rf"^  {re.escape(name)}\s*: (.*)$", stdout, re.MULTILINE)
    assert match, f"no '{name}' line in the summary:\n{stdout}"
    return match.group(1)


def test_summary_agrees_with_the_records(run: str, records: list[MessageRecord]) -> None:
    total = 2 * EVENTS
    assert sum(r.events for r in records) == total
    assert summary_value(run, "events") == f"{total} of {total}"
    assert summary_value(run, "result") == "OK, every event delivered"
    # per rank: one entry per rank, counts as in the records, adding up to the total
    printed = re.findall(
        r"rank (\d+): (\d+) in (\d+) messages", summary_value(run, "per rank")
    )  # fmt: skip
    by_rank: dict[str, list[int]] = {}
    for r in records:
        by_rank.setdefault(str(r.rank), [0, 0])
        by_rank[str(r.rank)][0] += r.events
        by_rank[str(r.rank)][1] += 1
    assert {rank: [int(e), int(m)] for rank, e, m in printed} == by_rank
    assert sorted(by_rank) == ["0", "1"]
    assert sum(int(e) for _, e, _ in printed) == total
    # MB/s: all bytes over the window from the first to the last message
    times = [r.received_at for r in records]
    window = max(times) - min(times)
    mb_per_s = sum(r.bytes for r in records) / window / 1e6
    streaming = summary_value(run, "streaming")
    match = re.search(r"^(\d+\.\d+) s for (\d+) events.*: (\d+\.\d) MB/s on the wire", streaming)
    assert match, streaming
    assert float(match.group(1)) == pytest.approx(window, abs=0.005)
    assert int(match.group(2)) == total
    assert float(match.group(3)) == pytest.approx(mb_per_s, abs=0.05)
    saved = json.loads((OUT / "summary.json").read_text())
    assert saved["mb_per_s"] == pytest.approx(mb_per_s, rel=1e-9)
    assert saved["streamer_stats"]["events"] == total  # the producers' own counts agree


def test_phases_appear_in_order(run: str, demo: ModuleType) -> None:
    lines = [m.groups() for m in map(LINE.match, run.splitlines()) if m]
    times = [float(t) for t, _ in lines]
    assert times == sorted(times), "the clock of the phase lines goes back"

    def first(label: str) -> int:
        at = [i for i, (_, text) in enumerate(lines) if text.startswith(label + ":")]
        assert at, f"no '{label}' line in:\n{run}"
        return at[0]

    ordered = ["db", "imported", "parsed", "run", "buffer_submitted", "first_data"]
    ordered += ["all_data", "done"]
    positions = [first(demo.PHASES[key]) for key in ordered]
    assert positions == sorted(positions), list(zip(ordered, positions, strict=True))
    # jobs start after the buffer was submitted and before data reaches the consumer
    for key in ("consumers_up", "streamer_running"):
        assert positions[4] < first(demo.PHASES[key]) < positions[5], key
    progress = first(demo.PROGRESS)
    assert positions[5] < progress <= positions[6]
    assert f"{2 * EVENTS}/{2 * EVENTS} events" in lines[positions[6] - 1][1]


def test_plot_is_drawn_from_the_records_from_the_first_message(
    run: str, records: list[MessageRecord], demo: ModuleType
) -> None:
    png = OUT / "throughput.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    numbers: dict[str, Any] = demo.analyse(records)
    saved = json.loads((OUT / "summary.json").read_text())
    for key in ("bin_edges_s", "rank_mb_per_s", "t_s", "cumulative_events"):
        assert saved[key] == numbers[key], key  # the demo plotted these records
    assert numbers["t_s"][0] == 0.0 and numbers["bin_edges_s"][0] == 0.0
    assert numbers["bin_edges_s"][-1] == pytest.approx(numbers["window_s"])
    # the plot's MB/s integrate to the summary's bytes over the same window
    width = numbers["bin_width_s"]
    area = sum(sum(series) * width for series in numbers["rank_mb_per_s"].values())
    assert area == pytest.approx(numbers["bytes"] / 1e6)
    assert numbers["cumulative_events"][-1] == 2 * EVENTS
    fig = demo.figure(numbers, "test")
    for ax in fig.axes:
        assert ax.get_xlim()[0] == 0.0
        for line in ax.get_lines():
            xs = list(line.get_xdata())
            assert not xs or min(xs) >= 0.0
        for patch in ax.patches:  # the MB/s stairs
            assert patch.get_data().edges[0] == 0.0
    assert len(fig.axes[0].patches) == 3  # rank 0, rank 1, all ranks
