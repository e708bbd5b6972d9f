"""Warm buffers and consumers (issue #19): ``lclstream-buffer --standby`` and
``lclstream-receive --standby`` as real processes, claimed over their real control sockets, then
a stream from a real producer through them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from airflow_provider_lclstream.transports import control
from tests.integration.buffer_consumer import (
    Consumer,
    free_port,
    start_buffer,
    start_producer,
    url,
    wait_consumers,
)

PROGRAM = "lclstream-buffer"


def wait_standby(
    log: Path, proc: subprocess.Popen, timeout_s: float = 60, program: str = PROGRAM
) -> str:
    """The standby's control URL, from the line it printed into its log."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = control.parse_standby(log.read_text(), program)
        if found is not None:
            return f"tcp://127.0.0.1:{found[1]}"
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_a_claimed_standby_buffer_serves_its_stream_exactly_once(tmp_path: Path) -> None:
    log = tmp_path / "buffer.log"
    buf = start_buffer(log, "--standby", "tcp://127.0.0.1:0", "--standby-timeout", "60")
    try:
        address = wait_standby(log, buf)
        ping = control.ping(address)
        assert ping["ok"] and ping["state"] == "idle" and ping["role"] == "buffer", ping
        # bad arguments: refused, named, and the standby keeps waiting
        bad = control.claim(address, json.dumps(["--input", "tcp://x:1"]), None, "t-bad")
        assert not bad["ok"] and "--input and --output are required" in bad["error"], bad
        nested = control.claim(address, json.dumps(["--standby", "tcp://x:0"]), None, "t-bad")
        assert not nested["ok"] and "cannot carry --standby" in nested["error"], nested
        assert not control.claim(address, "not json", None, "t-bad")["ok"]
        assert control.ping(address)["state"] == "idle"

        inp, out, port, n = url(), url(), free_port(), 300
        report = str(tmp_path / "report.json")
        args = ["--input", inp, "--output", out, "--expect-producers", "1",
                "--metrics", f"127.0.0.1:{port}", "--report", report]  # fmt: skip
        taken = control.claim(address, json.dumps(args), None, "t-1")
        assert taken == {"ok": True, "accepted": True, "role": "buffer"}, taken
        again = control.claim(address, json.dumps(args), None, "t-2")
        assert again == {"ok": False, "busy": True, "claim": "t-1"}, again  # one run per job
        consumer = Consumer(out)
        wait_consumers(port, 1)
        producer = start_producer(inp, n)
        assert producer.wait(60) == 0
        assert buf.wait(60) == 0, log.read_text()
    finally:
        if buf.poll() is None:
            buf.kill()
            buf.wait()
    consumer.join(10)
    tags = Counter(consumer.tags)
    assert set(tags) == {(0, i) for i in range(n)} and max(tags.values()) == 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["state"] == "done" and report["messages_out"] == n
    text = log.read_text()
    assert "standby: claimed by t-1" in text and "runs on host" in text


def test_an_idle_standby_buffer_exits_unused_and_bad_options_fail_clearly(tmp_path: Path) -> None:
    log = tmp_path / "buffer.log"
    buf = start_buffer(log, "--standby", "tcp://127.0.0.1:0", "--standby-timeout", "1")
    assert buf.wait(60) == 0, log.read_text()
    assert "standby ended unused (stopped, or idle for 1 s)" in log.read_text()
    stopped = start_buffer(log, "--standby", "tcp://127.0.0.1:0")
    assert control.stop(wait_standby(log, stopped))["stopping"] is True
    assert stopped.wait(60) == 0
    for args, message in (
        (["--standby", "tcp://127.0.0.1:0", "--input", "tcp://127.0.0.1:1"], "from its claim"),
        (["--standby", "udp://x:0"], "--standby takes tcp://HOST:PORT"),
        (["--standby", "tcp://127.0.0.1:0", "--standby-timeout", "0"], "positive number"),
        ([], "--input and --output are required"),
    ):
        proc = start_buffer(log, *args)
        assert proc.wait(60) == 2, (args, log.read_text())
        assert message in log.read_text(), (args, log.read_text())


def start_receiver(log: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "airflow_provider_lclstream.consumer.cli", *args]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def test_a_claimed_standby_consumer_receives_its_stream(tmp_path: Path) -> None:
    log = tmp_path / "receive.log"
    proc = start_receiver(log, "--standby", "tcp://127.0.0.1:0", "--standby-timeout", "60")
    try:
        address = wait_standby(log, proc, program="lclstream-receive")
        assert control.ping(address)["role"] == "consumer"
        bad = control.claim(address, json.dumps(["--out", "x"]), None, "t-bad")
        assert not bad["ok"] and "--url is required" in bad["error"], bad
        zero = control.claim(address, json.dumps(["--url", url(), "--timeout", "0"]), None, "t")
        assert not zero["ok"] and "--timeout must be > 0" in zero["error"], zero
        inp, n, out = url(), 40, tmp_path / "out"
        args = ["--url", inp, "--out", str(out), "--prefix", "c0", "--timeout", "30", "--quiet"]
        taken = control.claim(address, json.dumps(args), None, "t-1")
        assert taken == {"ok": True, "accepted": True, "role": "consumer"}, taken
        producer = start_producer(inp, n, "--rank", "0")
        assert producer.wait(60) == 0
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(list(out.glob("c0_*.bin"))) == n
    summary = json.loads(log.read_text().splitlines()[-1])
    assert summary["messages"] == n and summary["eos"] is True, summary
    assert "standby: claimed by t-1" in log.read_text()
    unused = start_receiver(log, "--standby", "tcp://127.0.0.1:0", "--standby-timeout", "0.5")
    assert unused.wait(60) == 0 and "standby ended unused" in log.read_text()
    for bad_args, message in (
        (["--standby", "tcp://127.0.0.1:0", "--url", "tcp://x:1"], "from its claim"),
        ([], "--url is required"),
    ):
        failed = start_receiver(log, *bad_args)
        assert failed.wait(60) == 2 and message in log.read_text(), log.read_text()
