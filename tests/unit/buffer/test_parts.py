"""The pure pieces: FIFO caps, stream accounting, callback signatures, Prometheus text."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from airflow_provider_lclstream.buffer.accounting import VANISH_GRACE_S, StreamAccounting
from airflow_provider_lclstream.buffer.callbacks import sign, verify
from airflow_provider_lclstream.buffer.consumers import ConsumerTable
from airflow_provider_lclstream.buffer.fifo import BoundedFifo
from airflow_provider_lclstream.buffer.metrics import prometheus_text
from airflow_provider_lclstream.protocol import EndOfStream


def test_fifo_caps_bytes_and_messages() -> None:
    fifo = BoundedFifo(capacity_bytes=100, capacity_messages=3)
    assert fifo.has_room()
    for _ in range(3):
        fifo.put(b"x" * 10)
    assert not fifo.has_room()  # message cap
    fifo.pop()
    assert fifo.has_room()
    fifo.put(b"y" * 70)  # 90 bytes held; the next 70-byte message would not fit
    assert not fifo.has_room() and fifo.bytes == 90 and fifo.peak_bytes == 90
    assert fifo.clear() == (3, 90) and fifo.has_room()


def test_fifo_takes_one_oversized_message_when_empty() -> None:
    fifo = BoundedFifo(capacity_bytes=10, capacity_messages=5)
    fifo.put(b"z" * 50)
    assert len(fifo) == 1 and not fifo.has_room()


def eos(name: str, rank: int, stream: str = "") -> EndOfStream:
    extra: dict[str, object] = {"stream_id": stream} if stream else {}
    return EndOfStream(producer=name, rank=rank, messages=2, bytes=20, events=4, extra=extra)


def test_accounting_complete_with_expected_producers() -> None:
    acct = StreamAccounting(expect_producers=2)
    acct.connect("p1", "10.0.0.1:1")
    acct.data("p1", 10)
    acct.data("p1", 10)
    assert acct.end("p1", eos("a/r0", 0))
    assert not acct.end("p1", eos("a/r0", 0))  # duplicate
    assert not acct.complete() and acct.missing_ranks() == [1]
    assert acct.end("p2", eos("b/r1", 1))
    assert acct.complete() and acct.totals()["events"] == 8 and acct.duplicate_eos == 1
    assert acct.snapshot()["per_producer"]["b/r1"]["rank"] == 1


def test_accounting_vanished_producer_and_reset() -> None:
    acct = StreamAccounting(expect_producers=None)
    acct.connect("p1", "10.0.0.1:1")
    acct.connect("p2", "10.0.0.2:2")
    acct.data("p1", 5)
    acct.data("p2", 5)
    acct.end("p1", eos("a/r0", 0))
    acct.disconnect("p2")
    assert not acct.complete() and acct.producers_seen == 2
    assert acct.vanished() == []  # within the grace period: its EOS may still be queued
    (gone,) = acct.vanished(now=time.time() + VANISH_GRACE_S + 1)
    assert "10.0.0.2:2" in gone.describe()
    assert any("vanished" in p for p in acct.problems())
    acct.reset()
    assert list(acct.connections) == ["p1"]  # still open: carried into the next stream
    assert not acct.end("p1", eos("a/r0", 0))  # a late copy of the last stream's EOS


def test_upstream_buffer_copies_count_once() -> None:
    acct = StreamAccounting(expect_producers=1)
    assert acct.end("up", eos("buffer:h:1", 0, stream="s1"))
    assert not acct.end("up", eos("buffer:h:1", 0, stream="s1"))
    acct.reset()
    assert acct.end("up", eos("buffer:h:1", 0, stream="s2"))  # the next stream


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"jobid": "j", "jobndx": 1, "info": 0, "state": "active"}'
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert sign(body, "k") == f"sha256={expected}"
    assert verify(body, "k", f"sha256={expected}") and not verify(body, "k", None)


def test_prometheus_text() -> None:
    stats = {
        "messages_in": 3, "bytes_in": 30, "messages_out": 2, "bytes_out": 20,
        "rates": {"messages_in": 1.0, "bytes_in": 10.0, "messages_out": 1.0, "bytes_out": 9.0},
        "buffered_messages": 1, "buffered_bytes": 10, "capacity_bytes": 100,
        "capacity_messages": 5, "dropped_messages": 0, "streams_finished": 0, "state": "draining",
        "consumers": {"connected": 2, "lost": 0},
        "producers": {"seen": 1, "ended": 1, "connected": 0, "vanished": []},
    }  # fmt: skip
    text = prometheus_text(stats)
    assert "lclstream_buffer_messages_in_total 3.0\n" in text  # prometheus_client: floats
    assert 'lclstream_buffer_state{state="draining"} 1' in text
    assert 'lclstream_buffer_state{state="running"} 0' in text
    assert text.count("# TYPE lclstream_buffer_state gauge") == 1


def test_consumer_estimates_share_each_message_among_those_connected_then() -> None:
    """Shares are handed out lazily (one addition per message, #18), yet each message still
    counts 1/n for each of the n consumers connected when it was sent."""
    table = ConsumerTable()
    table.connect("a", "")
    table.connect("b", "")
    for _ in range(10):
        table.account_send()
    table.connect("c", "")  # the 10 before it are a's and b's
    for _ in range(9):
        table.account_send()
    gone = table.disconnect("a", mid_stream=True)
    assert gone is not None and gone.sent_estimate == pytest.approx(8.0)
    for _ in range(4):
        table.account_send()
    estimates = {c.key: c.sent_estimate for c in table.connected()}
    assert estimates == pytest.approx({"b": 10.0, "c": 5.0})
    snap = table.snapshot()
    assert [c["sent_estimate"] for c in snap["live"]] == [10.0, 5.0]
    assert snap["gone"][0]["sent_estimate"] == 8.0 and snap["lost"] == 1
