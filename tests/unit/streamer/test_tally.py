"""A rank's tally: its last whole counts survive the rank, a half-written slot never wins, and
the job's fallback prints them as lower-bound summaries that ``transfer/report.py`` reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_lclstream.streamer.tally import (
    SLOT_BYTES,
    Tally,
    main,
    read_tally,
    tally_path,
)
from airflow_provider_lclstream.transfer.report import accounting_line, lost_buffer_accounting


def summary(rank: int, events: int, **extra: object) -> dict:
    return {"rank": rank, "producer": f"h:1/r{rank}", "role": "bd", "events": events, **extra}


def test_the_last_write_is_read_back(tmp_path: Path) -> None:
    tally = Tally(tmp_path, 2)
    for events in (0, 4, 8):
        tally.write(summary(2, events))
    tally.close()
    got = read_tally(tmp_path, 2)
    assert got is not None and got["events"] == 8 and got["tally_seq"] == 3
    assert read_tally(tmp_path, 3) is None  # no file


def test_a_torn_slot_leaves_the_other_one(tmp_path: Path) -> None:
    tally = Tally(tmp_path, 0)
    tally.write(summary(0, 4))  # seq 1: second slot
    tally.write(summary(0, 6))  # seq 2: first slot
    tally.close()
    path = tally_path(tmp_path, 0)
    raw = bytearray(path.read_bytes())
    raw[10:SLOT_BYTES] = b"\0" * (SLOT_BYTES - 10)  # the newer slot cut short mid-write
    path.write_bytes(bytes(raw))
    got = read_tally(tmp_path, 0)
    assert got is not None and got["events"] == 4


def test_a_long_summary_drops_the_handler_stats(tmp_path: Path) -> None:
    tally = Tally(tmp_path, 0)
    tally.write(summary(0, 5, handlers=[{"handler": "x" * 100}] * 40))
    tally.close()
    got = read_tally(tmp_path, 0)
    assert got is not None and got["events"] == 5 and "handlers" not in got


def test_counts_survive_a_killed_process(tmp_path: Path) -> None:
    """SIGKILL right after the write: nothing flushed or closed, the pages are still there."""
    code = (
        "import os, signal, sys\n"
        "from airflow_provider_lclstream.streamer.tally import Tally\n"
        f"t = Tally({str(tmp_path)!r}, 1)\n"
        "t.write({'rank': 1, 'producer': 'p', 'events': 7})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == -signal.SIGKILL
    got = read_tally(tmp_path, 1)
    assert got is not None and got["events"] == 7


def test_the_fallback_prints_lower_bounds_that_the_accounting_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for rank, events in ((0, 0), (2, 12)):
        tally = Tally(tmp_path, rank)
        tally.write(summary(rank, events))
        tally.close()
    assert main([str(tmp_path), "3"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["rank"], d["events"], d["lower_bound"]) for d in lines] == [
        (0, 0, True), (2, 12, True)
    ]  # fmt: skip
    assert "rank 0 0, rank 2 12; at least 12 events produced; ranks [1] left no tally" in err
    # rank 0 also printed its own summary (exact): that one counts, the tally does not
    log = json.dumps(summary(0, 0, error=None)) + "\n" + out
    receiver = json.dumps({"expect_producers": 3, "events": 10, "events_delivered": 10,
                           "eos": False})  # fmt: skip
    accounting = lost_buffer_accounting(3, log, {"c0": receiver})
    assert accounting["exact"] is False and accounting["missing"] is None
    assert accounting["produced"] == 12 and accounting["produced_is_lower_bound"] is True
    assert accounting["ranks_without_summary"] == [1]
    assert accounting["ranks_counted_to_last_batch"] == [2]
    assert accounting_line(accounting) == (
        "at least 12 events produced, 10 delivered, missing unknown, streamer ranks [1] sent no "
        "count, streamer ranks [2] died: counted up to their last batch"
    )


def test_the_streamer_keeps_a_tally_when_asked(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "event_source: {type: InternalEventSource, number_of_events_to_generate: 6}\n"
        "data_sources: {detector_data: {type: SyntheticDetector, shape: [1, 4, 4]}}\n"
        "processing_pipeline: {type: BatchProcessingPipeline, batch_size: 2}\n"
        "data_serializer: {type: HDF5BinarySerializer}\n"
        f"data_handlers: [{{type: BinaryFileWritingDataHandler, write_directory: {tmp_path}}}]\n"
    )
    env = {**os.environ, "LCLSTREAM_TALLY_DIR": str(tmp_path / "tally")}
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_lclstream.streamer.cli", "-c", str(config)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    got = read_tally(tmp_path / "tally", 0)
    # the source's checkpoint, 3 batches, then the final summary
    assert got is not None and got["events"] == 6 and got["tally_seq"] == 5, got
    assert os.path.getsize(tally_path(tmp_path / "tally", 0)) == 2 * SLOT_BYTES


def test_an_unwritable_tally_dir_is_only_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow_provider_lclstream.streamer.tally import open_tally

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LCLSTREAM_TALLY_DIR", str(tmp_path / "file" / "below"))
    assert open_tally(0) is None
    assert "lclstreamer: rank 0: no tally in" in capsys.readouterr().err
    monkeypatch.delenv("LCLSTREAM_TALLY_DIR")
    assert open_tally(0) is None
