"""Operating the buffer: SIGTERM drain, memory under the cap, metrics, callbacks, Python API."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from airflow_provider_lclstream.buffer import Buffer, BufferConfig
from airflow_provider_lclstream.buffer.callbacks import SIGNATURE_HEADER, verify
from airflow_provider_lclstream.transports import open_sender
from tests.integration.buffer_consumer import (
    Consumer,
    free_port,
    get_stats,
    start_buffer,
    start_producer,
    url,
    wait_consumers,
)

MiB = 2**20


def wait_stats(port: int, check, timeout_s: float = 15.0) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stats = get_stats(port)
            if check(stats):
                return stats
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "buffer stats never matched"
        time.sleep(0.05)


def test_sigterm_drains_to_a_late_consumer(tmp_path: Path) -> None:
    inp, out, port = url(), url(), free_port()
    buf = start_buffer(
        tmp_path / "buffer.log", "--input", inp, "--output", out, "--expect-producers", "2",
        "--metrics", f"127.0.0.1:{port}", "--report", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert start_producer(inp, 200, "--rank", "0").wait(20) == 0
    wait_stats(port, lambda s: s["producers"]["ended"] == 1 and s["buffered_messages"] == 200)
    buf.send_signal(signal.SIGTERM)
    wait_stats(port, lambda s: s["state"] == "draining")
    consumer = Consumer(out)  # arrives after the stop request: still gets everything
    consumer.join(15)
    assert len(consumer.tags) == 200 and consumer.eos is not None
    assert consumer.eos.extra["reason"] == "stopped" and consumer.eos.extra["complete"] is False
    assert buf.wait(10) == 1  # rank 1 never ended
    stats = json.loads((tmp_path / "report.json").read_text())
    assert stats["dropped_messages"] == 0 and stats["producers"]["missing_ranks"] == [1]


def test_sigterm_without_consumers_reports_what_was_left(tmp_path: Path) -> None:
    inp, out, port = url(), url(), free_port()
    buf = start_buffer(
        tmp_path / "buffer.log", "--input", inp, "--output", out, "--drain-timeout", "0.5",
        "--metrics", f"127.0.0.1:{port}", "--report", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert start_producer(inp, 50, "--rank", "0").wait(20) == 0
    wait_stats(port, lambda s: s["buffered_messages"] == 50)
    buf.send_signal(signal.SIGTERM)
    assert buf.wait(10) == 1
    stats = json.loads((tmp_path / "report.json").read_text())
    assert stats["dropped_messages"] == 50
    assert any("50 messages" in p and "undelivered" in p for p in stats["problems"])
    assert "left undelivered" in (tmp_path / "buffer.log").read_text()


def test_slow_consumer_keeps_memory_under_the_cap(tmp_path: Path) -> None:
    inp, out, port, n = url(), url(), free_port(), 400  # 400 x 1 MiB through a 32 MiB cap
    buf = start_buffer(
        tmp_path / "buffer.log", "--input", inp, "--output", out, "--expect-producers", "1",
        "--capacity-bytes", "32MiB", "--metrics", f"127.0.0.1:{port}",
        "--report", str(tmp_path / "report.json"),
    )  # fmt: skip
    consumer = Consumer(out, delay_s=0.004)
    wait_consumers(port, 1)
    proc = psutil.Process(buf.pid)
    baseline = proc.memory_info().rss
    producer = start_producer(inp, n, "--rank", "0", "--size", str(MiB))
    peak = baseline
    while buf.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    assert producer.wait(10) == 0 and buf.returncode == 0
    consumer.join(10)
    assert len(consumer.tags) == n and consumer.sizes == n * MiB
    stats = json.loads((tmp_path / "report.json").read_text())
    assert stats["peak_buffered_bytes"] <= 32 * MiB
    growth = (peak - baseline) / MiB
    print(f"buffer RSS: baseline {baseline / MiB:.0f} MiB, peak +{growth:.0f} MiB (cap 32 MiB)")
    # FIFO (32 MiB) + a few messages in flight per socket pipe and in pyzmq/NNG copies
    assert growth < 32 + 24


def test_a_slow_consumer_does_not_hold_the_producer_back(tmp_path: Path) -> None:
    """While data is queued the loop waits in the output's blocking send (#18). Between sends
    it takes everything the input holds, so the FIFO absorbs what a slow consumer cannot take
    yet and the producer finishes long before the consumer (not at the consumer's pace)."""
    inp, out, port, n = url(), url(), free_port(), 300
    buf = start_buffer(
        tmp_path / "buffer.log", "--input", inp, "--output", out, "--expect-producers", "1",
        "--metrics", f"127.0.0.1:{port}",
    )  # fmt: skip
    consumer = Consumer(out, delay_s=0.005)  # >= 1.5 s for all n, a send every 5 ms
    wait_consumers(port, 1)
    producer = start_producer(inp, n, "--rank", "0", "--size", str(64 * 1024))
    assert producer.wait(60) == 0
    got_when_producer_ended = len(consumer.tags)
    assert buf.wait(60) == 0
    consumer.join(10)
    assert len(consumer.tags) == n and consumer.sizes == n * 64 * 1024
    print(f"the consumer had {got_when_producer_ended} of {n} when the producer ended")
    assert got_when_producer_ended < n // 3


def test_python_api_and_metrics_endpoints() -> None:
    inp, out = url(), url()
    config = BufferConfig(input=inp, output=out, expect_producers=1, metrics="127.0.0.1:0")
    buffer = Buffer(config).start()
    assert buffer.metrics_port
    base = f"http://127.0.0.1:{buffer.metrics_port}"
    consumer = Consumer(out)
    with open_sender(inp, "zmq", send_timeout_s=10) as sender:
        for i in range(30):
            sender.send(f"0:{i}:".encode() + b"x" * 1000)
        stats = wait_stats(buffer.metrics_port, lambda s: s["messages_in"] == 30)
        assert stats["state"] == "running" and stats["producers"]["seen"] == 1
        metrics = httpx.get(f"{base}/metrics").text
        assert "lclstream_buffer_messages_in_total 30" in metrics
        assert 'lclstream_buffer_state{state="running"} 1' in metrics
        assert "# TYPE lclstream_buffer_consumers_connected gauge" in metrics
        assert httpx.get(f"{base}/nope").status_code == 404
        from airflow_provider_lclstream.protocol import EndOfStream

        sender.send(EndOfStream(producer="p0", rank=0, messages=30).encode())
    assert buffer.wait(15) == 0
    consumer.join(5)
    assert len(consumer.tags) == 30 and consumer.eos is not None
    final = buffer.stats()
    assert final["state"] == "done" and final["producers"]["names"] == ["p0"]
    assert final["producers"]["per_producer"]["p0"]["messages"] == 30


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str | None]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((body, self.headers.get(SIGNATURE_HEADER)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_callbacks_are_signed(outcome: str) -> None:
    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    inp, out, secret = url(), url(), "s3cret"
    config = BufferConfig(
        # "failed": no producer, so the idle timeout ends it; "completed": the producer's
        # process must start and connect first (it once took over 0.5 s under load)
        input=inp, output=out, expect_producers=1, drain_timeout_s=1,
        idle_timeout_s=0.5 if outcome == "failed" else 30,
        callback=f"http://127.0.0.1:{server.server_address[1]}/cb", callback_secret=secret,
        jobid="job-7",
    )  # fmt: skip
    buffer = Buffer(config).start()
    consumer = Consumer(out)
    if outcome == "completed":
        assert start_producer(inp, 5, "--rank", "0").wait(20) == 0
    assert buffer.wait(15) == (0 if outcome == "completed" else 1)
    consumer.join(5)
    server.shutdown()
    states = []
    for body, signature in _Recorder.received:
        assert verify(body, secret, signature), "bad x-hub-signature-256"
        assert not verify(body, "wrong", signature)
        payload = json.loads(body)
        assert set(payload) == {"jobid", "jobndx", "state", "info"}
        assert payload["jobid"] == "job-7" and payload["jobndx"] == 1
        states.append((payload["state"], payload["info"]))
    assert states == [("active", 0), (outcome, 0 if outcome == "completed" else 1)]


def test_persistent_serves_stream_after_stream() -> None:
    inp, out = url(), url()
    config = BufferConfig(input=inp, output=out, expect_producers=1, persistent=True)
    buffer = Buffer(config).start()
    stream_ids = []
    for stream in range(2):
        consumer = Consumer(out)
        assert start_producer(inp, 20, "--rank", "0").wait(20) == 0
        consumer.join(15)
        assert consumer.eos is not None and consumer.eos.extra["stream"] == stream + 1
        assert len(consumer.tags) == 20 and consumer.eos.messages == 20
        stream_ids.append(consumer.eos.extra["stream_id"])
    assert stream_ids[0] != stream_ids[1]
    assert buffer.stop(10) == 0  # stopped between streams
    stats = buffer.stats()
    assert stats["streams_finished"] == 2 and stats["messages_out"] == 40
