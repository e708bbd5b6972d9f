"""A rank's tally: its last whole counts survive the rank, a half-written slot never wins, and
the job's fallback prints them as lower-bound summaries that ``transfer/report.py`` reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.streamer.tally import (
    SLOT_BYTES,
    TALLY_BYTES,
    Tally,
    main,
    read_tally,
    tally_path,
)
from airflow_provider_lclstream.transfer.jobs import streamer_job
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
        "t.count(8); t.count(9)\n"  # two more events read, their batch never finished
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == -signal.SIGKILL
    got = read_tally(tmp_path, 1)
    assert got is not None and got["events"] == 7 and got["events_counted"] == 9


def test_a_killed_rank_counts_every_event_it_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rank killed outright (no summary, no final tally) is counted to its last event, not
    its last batch: exact; a rank with no tally at all keeps the accounting open."""
    for rank, events, read in ((0, 0, 0), (2, 12, 15)):
        tally = Tally(tmp_path, rank)
        tally.write(summary(rank, events))
        for n in range(events + 1, read + 1):
            tally.count(n)
        tally.close()
    assert main([str(tmp_path), "3"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["rank"], d["events"], d["killed"], d.get("lower_bound")) for d in lines] == [
        (0, 0, True, None), (2, 15, True, None)
    ]  # fmt: skip
    assert "rank 0 0, rank 2 15; at least 15 events produced; ranks [1] left no tally" in err
    # rank 0 also printed its own summary: that one counts
    log = json.dumps(summary(0, 0, error=None)) + "\n" + out
    receiver = json.dumps({"expect_producers": 3, "events": 10, "events_delivered": 10,
                           "eos": False})  # fmt: skip
    accounting = lost_buffer_accounting(3, log, {"c0": receiver})
    assert accounting["exact"] is False and accounting["missing"] is None
    assert accounting["produced"] == 15 and accounting["produced_is_lower_bound"] is True
    assert accounting["ranks_without_summary"] == [1]
    assert accounting["ranks_counted_to_last_batch"] == []
    assert accounting_line(accounting) == (
        "at least 15 events produced, 10 delivered, missing unknown, streamer ranks [1] sent no "
        "count"
    )
    # with rank 1's count too, it is exact
    tally = Tally(tmp_path, 1)
    tally.write(summary(1, 4), final=True)
    tally.close()
    assert main([str(tmp_path), "3"]) == 0
    out, err = capsys.readouterr()
    accounting = lost_buffer_accounting(3, out, {"c0": receiver})
    assert accounting["exact"] is True and accounting["missing"] == 19 - 10, accounting


def test_a_tally_without_the_event_count_is_a_lower_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file with the two slots only (as an older version wrote): as of the last batch."""
    tally = Tally(tmp_path, 0)
    tally.write(summary(0, 6))
    tally.close()
    path = tally_path(tmp_path, 0)
    path.write_bytes(path.read_bytes()[: 2 * SLOT_BYTES])
    assert main([str(tmp_path), "1"]) == 0
    out, err = capsys.readouterr()
    line = json.loads(out)
    assert line["events"] == 6 and line["lower_bound"] is True and "killed" not in line
    assert "(ranks [0] died: as of their last batch); at least 6 events produced" in err
    assert "completeness unknown" in err
    accounting = lost_buffer_accounting(1, out, {"c0": json.dumps(
        {"expect_producers": 1, "events": 2, "eos": False})})  # fmt: skip
    assert accounting["ranks_counted_to_last_batch"] == [0] and not accounting["exact"]
    assert accounting_line(accounting).endswith(
        "streamer ranks [0] died: counted up to their last batch"
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
    assert os.path.getsize(tally_path(tmp_path / "tally", 0)) == TALLY_BYTES


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


def test_a_final_tally_is_printed_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rank that ended or got SIGTERM wrote its own summary there: printed as it is, and the
    accounting is exact from the tallies alone (its stdout line may never have arrived)."""
    for rank, events in ((0, 5), (1, 7)):
        tally = Tally(tmp_path, rank)
        tally.write(summary(rank, events - 2))
        tally.write(summary(rank, events, error="terminated by signal 15"), final=True)
        tally.close()
    assert main([str(tmp_path), "2"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["rank"], d["events"], d.get("lower_bound"), d["from_tally"]) for d in lines] == [
        (0, 5, None, True), (1, 7, None, True)
    ]  # fmt: skip
    assert "rank 0 5, rank 1 7; 12 events produced" in err and "at least" not in err
    receiver = json.dumps({"expect_producers": 2, "events": 9, "events_delivered": 9,
                           "eos": False})  # fmt: skip
    accounting = lost_buffer_accounting(2, out, {"c0": receiver})
    assert accounting["exact"] is True and accounting["missing"] == 3, accounting


def test_wait_takes_a_final_tally_written_late(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The launcher can return before a SIGTERMed rank wrote its summary: ``--wait`` sees it."""
    tally = Tally(tmp_path, 0)
    tally.write(summary(0, 2))

    def late() -> None:
        time.sleep(0.5)
        tally.write(summary(0, 3), final=True)

    writer = threading.Thread(target=late)
    writer.start()
    started = time.monotonic()
    assert main(["--wait", "20", str(tmp_path), "1"]) == 0
    took = time.monotonic() - started
    writer.join()
    tally.close()
    line = json.loads(capsys.readouterr().out)
    assert line["events"] == 3 and line["final"] is True and "lower_bound" not in line
    assert took < 15, took  # returned when it was final, not at the end of the wait


def test_bad_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([str(tmp_path), "0"], ["--wait", "-1", str(tmp_path), "2"], [str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "ranks must be at least 1" in capsys.readouterr().err


@pytest.mark.mpi
def test_a_cancelled_streamer_job_prints_every_rank_s_exact_count(tmp_path: Path) -> None:
    """The streamer job's own script, SIGTERM to all its processes as ``scancel`` or the local
    backend's cancel sends it: the shell outlives the launcher and prints each rank's final
    tally, so the counts are exact from those lines alone (``srun`` can lose the ranks' own
    stdout lines when it is cancelled: seen in CI)."""
    request = TransferRequest(synthetic=True, events=200, img_per_file=2, ranks=2)
    config = request.to_streamer_config("tcp://127.0.0.1:1")
    config.event_source.events_per_second = 4.0  # type: ignore[union-attr]
    spec = streamer_job(request, config, bin_dir=str(Path(sys.executable).parent))
    script = tmp_path / "job.sh"
    script.write_text(spec.script)
    job = subprocess.Popen(
        ["bash", str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, env={**os.environ, "LCLSTREAM_JOB_ID": "j7"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            tallies = [read_tally(tmp_path / "lclstreamer-tally-j7", r) for r in range(2)]
            # events_counted: the live count (a rank blocked sending its first batch wrote no
            # checkpoint yet)
            if all(t is not None and t.get("events_counted", 0) >= 2 for t in tallies):
                break
            assert job.poll() is None, job.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("the ranks did not start")
        os.killpg(job.pid, signal.SIGTERM)
        out, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0, (out, err)
    assert "lclstreamer job: SIGTERM" in err, err
    from_tally = "\n".join(line for line in out.splitlines() if '"from_tally": true' in line)
    per_rank = {json.loads(line)["rank"] for line in from_tally.splitlines()}
    assert per_rank == {0, 1}, (out, err)
    receiver = json.dumps({"expect_producers": 2, "events": 0, "eos": False})
    accounting = lost_buffer_accounting(2, from_tally, {"c0": receiver})
    assert accounting["exact"] is True and accounting["produced"] >= 4, accounting
    # the ranks' own lines (when they arrive) say the same
    own = lost_buffer_accounting(2, out.replace('"from_tally": true', ""), {"c0": receiver})
    assert own["produced"] == accounting["produced"], (out, err)
