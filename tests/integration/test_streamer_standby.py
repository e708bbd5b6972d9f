"""``mpiexec -n 2 lclstreamer --standby``: a warm streamer that waits for one run (issue #19).

Real MPI (the mpich wheel), real ZeroMQ control socket, real receiver."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from airflow_provider_lclstream.streamer import standby
from tests.integration.streaming import BIN, BackgroundReceiver, free_port, total_line
from tests.integration.test_streamer_mpi import synthetic_config

pytestmark = pytest.mark.mpi


def start_standby(
    mpiexec: str, ranks: int, tmp_path: Path, idle_s: float = 60
) -> tuple[subprocess.Popen[str], str]:
    """The standby process and its control URL (read from its stdout's standby line)."""
    out = (tmp_path / "standby.out").open("w")
    proc = subprocess.Popen(
        [mpiexec, "-n", str(ranks), str(BIN / "lclstreamer"), "--standby", "tcp://127.0.0.1:0",
         "--idle-timeout", str(idle_s)],
        stdout=out, stderr=(tmp_path / "standby.err").open("w"), text=True, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = standby.parse_standby((tmp_path / "standby.out").read_text())
        if found:
            return proc, f"tcp://127.0.0.1:{found[1]}"
        assert proc.poll() is None, (tmp_path / "standby.err").read_text()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no standby line within 60 s")


def finish(proc: subprocess.Popen[str], tmp_path: Path) -> tuple[int, str, str]:
    rc = proc.wait(timeout=120)
    return rc, (tmp_path / "standby.out").read_text(), (tmp_path / "standby.err").read_text()


def test_a_claimed_standby_runs_its_run_exactly_and_only_once(mpiexec: str, tmp_path: Path) -> None:
    proc, control = start_standby(mpiexec, 2, tmp_path)
    try:
        idle = standby.ping(control)
        assert idle["ok"] and idle["state"] == "idle" and idle["ranks"] == 2
        url = f"tcp://127.0.0.1:{free_port()}"
        receiver = BackgroundReceiver(url, "zmq", bind=True, producers=2)
        text = yaml.safe_dump(synthetic_config(url, "zmq", "client", events=17))
        answer = standby.claim(control, text, None, "transfer-a")
        assert answer == {"ok": True, "accepted": True, "ranks": 2}
        # the claim is atomic on the job: a second transfer is told it is taken, and by whom
        second = standby.claim(control, text, None, "transfer-b")
        assert second["ok"] is False and second["busy"] is True and second["claim"] == "transfer-a"
        rc, out, err = finish(proc, tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, err
    report = receiver.join()
    total = total_line(out)
    assert total["events"] == 34 and total["per_rank_events"] == [17, 17]
    assert report.ok, report.summary()
    assert sum(receiver.events_per_message) == 34
    assert "claimed by transfer-a" in err


def test_num_events_of_the_claim_is_obeyed(mpiexec: str, tmp_path: Path) -> None:
    proc, control = start_standby(mpiexec, 2, tmp_path)
    url = f"tcp://127.0.0.1:{free_port()}"
    receiver = BackgroundReceiver(url, "zmq", bind=True, producers=2)
    text = yaml.safe_dump(synthetic_config(url, "zmq", "client", events=40))
    assert standby.claim(control, text, 6, "t")["accepted"]
    rc, out, err = finish(proc, tmp_path)
    assert rc == 0, err
    assert total_line(out)["per_rank_events"] == [6, 6]
    assert receiver.join().ok


def test_a_bad_config_is_refused_and_the_standby_keeps_waiting(
    mpiexec: str, tmp_path: Path
) -> None:
    proc, control = start_standby(mpiexec, 2, tmp_path)
    try:
        answer = standby.claim(control, "data_handlers: [{type: NoSuchHandler}]\n", None, "bad")
        assert answer["ok"] is False and "invalid configuration" in answer["error"]
        assert standby.request(control, {"op": "jump"})["error"].startswith("unknown op 'jump'")
        assert standby.ping(control)["state"] == "idle"
        assert standby.stop(control) == {"ok": True, "stopping": True}
        rc, _out, err = finish(proc, tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, err
    assert "standby ended unused" in err


def test_an_idle_standby_exits_unused_without_spinning(mpiexec: str, tmp_path: Path) -> None:
    proc, control = start_standby(mpiexec, 2, tmp_path, idle_s=3)
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    for child in children:
        child.cpu_percent(None)
    time.sleep(1.0)
    busy = [c.cpu_percent(None) for c in children if c.is_running()]
    rc, _out, err = finish(proc, tmp_path)
    assert rc == 0, err
    assert "idle for 3 s" in err
    # a waiting rank sleeps between probes: far below the 100 % of MPI's busy wait
    assert busy and max(busy) < 50, busy
    with pytest.raises(standby.StandbyUnreachable, match="no answer within 0.5 s"):
        standby.ping(control, timeout_s=0.5)


def test_bad_standby_arguments_fail_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "lclstreamer"), "--standby", "ipc:///x", "--idle-timeout", "5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--standby takes tcp://HOST:PORT" in result.stderr
    help_text = subprocess.run(
        [str(BIN / "lclstreamer"), "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--standby tcp://0.0.0.0:0" in help_text


def test_standby_line_round_trip() -> None:
    text = "noise\n" + standby.standby_line("lcls-n1", 40123) + "\nmore\n"
    assert standby.parse_standby(text) == ("lcls-n1", 40123)
    assert standby.parse_standby("lclstreamer: standby on host x port y\n") is None
    # another process's unfinished line before it (seen in CI: rank 0's stderr ``print``
    # wrote its text and its newline apart, and the standby line landed between them)
    mixed = "imported h5py, psana" + standby.standby_line("vm", 46645) + "\n, x\n"
    assert standby.parse_standby(mixed) == ("vm", 46645)
    assert json.loads(json.dumps({"a": 1}))  # the protocol is JSON either way
