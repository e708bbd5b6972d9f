"""``lclstream-replay`` and the xtc2 walker on runs made by xtcwriter + smdwriter."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.streamer.replay import replay
from airflow_provider_lclstream.streamer.xtc2 import L1_ACCEPT, CorruptDgramError, find_run, scan
from tests.psana_data import write_run

pytestmark = pytest.mark.psana


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("rec") / "xtc", "xpptut15", 7, streams=2, events=12)


def test_scan_walks_whole_dgrams_of_big_and_small_files(recorded: Path) -> None:
    big = scan(recorded / "xpptut15-r0007-s001-c000.xtc2")
    small = scan(recorded / "smalldata" / "xpptut15-r0007-s001-c000.smd.xtc2")
    assert [d.timestamp for d in big] == [d.timestamp for d in small]
    assert sum(d.service == L1_ACCEPT for d in big) == 12
    assert (
        big[-1].offset + big[-1].size == (recorded / "xpptut15-r0007-s001-c000.xtc2").stat().st_size
    )


def test_a_corrupt_dgram_names_file_and_offset(recorded: Path, tmp_path: Path) -> None:
    data = bytearray((recorded / "xpptut15-r0007-s000-c000.xtc2").read_bytes())
    third = scan("x", bytes(data))[2]
    data[third.offset + 20 : third.offset + 24] = (10**9).to_bytes(4, "little")
    bad = tmp_path / "bad.xtc2"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptDgramError) as err:
        scan(bad)
    assert f"{bad}: corrupt dgram at byte offset {third.offset}" in str(err.value)
    assert "2 good dgrams before it" in str(err.value)


def test_run_not_found_names_directory_and_pattern(tmp_path: Path) -> None:
    with pytest.raises(LCLStreamError) as err:
        find_run(tmp_path, "xpptut15", 99)
    assert f"no file xpptut15-r0099-s*-c000.xtc2 in {tmp_path}" in str(err.value)


def test_replay_appends_inprogress_then_renames(recorded: Path, tmp_path: Path) -> None:
    seen_inprogress: list[list[str]] = []

    def on_start() -> None:
        seen_inprogress.append(sorted(p.name for p in tmp_path.rglob("*.inprogress")))

    started = time.monotonic()
    stats = replay(recorded, tmp_path, "xpptut15", 7, rate_hz=100, dest_run=8, on_start=on_start)
    assert time.monotonic() - started >= 11 / 100  # 12 events paced at 100 Hz
    assert stats.l1 == 12 and len(stats.l1_written) == 12 and stats.streams == 2
    assert len(seen_inprogress[0]) == 4  # 2 streams x (big, small), open before the first dgram
    assert not list(tmp_path.rglob("*.inprogress"))
    for stream in (0, 1):
        for sub, suffix in (("", ".xtc2"), ("smalldata/", ".smd.xtc2")):
            src = recorded / f"{sub}xpptut15-r0007-s00{stream}-c000{suffix}"
            out = tmp_path / f"{sub}xpptut15-r0008-s00{stream}-c000{suffix}"
            assert out.read_bytes() == src.read_bytes()


def test_replay_refuses_to_overwrite(recorded: Path, tmp_path: Path) -> None:
    replay(recorded, tmp_path, "xpptut15", 7, rate_hz=1000)
    with pytest.raises(LCLStreamError, match="already exists"):
        replay(recorded, tmp_path, "xpptut15", 7, rate_hz=1000)


def test_cli_help_and_timeline(recorded: Path, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "airflow_provider_lclstream.streamer.replay"]
    helped = subprocess.run([*cli, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "examples:" in helped.stdout
    timeline = tmp_path / "t.jsonl"
    done = subprocess.run(
        [*cli, "--source", str(recorded), "--exp", "xpptut15", "--run", "7", "--dest",
         str(tmp_path / "out"), "--rate", "1000", "--timeline", str(timeline)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["l1"] == 12
    assert len(timeline.read_text().splitlines()) == 12
    missing = subprocess.run(
        [*cli, "--source", str(tmp_path), "--exp", "xpptut15", "--run", "5", "--dest", "x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 1 and "run not found" in missing.stderr
