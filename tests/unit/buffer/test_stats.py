"""The ``/stats`` schema: what a real buffer serves validates; a malformed document is refused."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from pydantic import BaseModel

from airflow_provider_lclstream.buffer import Buffer, BufferConfig
from airflow_provider_lclstream.buffer.metrics import prometheus_text
from airflow_provider_lclstream.buffer.stats import BufferStats, StreamReport, parse_stats
from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages
from airflow_provider_lclstream.exceptions import StatsDocumentError
from airflow_provider_lclstream.protocol import EndOfStream
from airflow_provider_lclstream.streamer.serializers.hdf5 import HDF5BinarySerializer
from airflow_provider_lclstream.transfer.jobs import free_port
from airflow_provider_lclstream.transfer.stats import summarize_report
from airflow_provider_lclstream.transports import open_sender

BLOB = bytes(HDF5BinarySerializer({"x": "/x"}).serialize({"x": np.zeros((10, 4))}, {}))


def unknown_keys(value: object, where: str = "") -> list[str]:
    """Keys of a parsed document that its schema does not name (kept as pydantic extras)."""
    if isinstance(value, BaseModel):
        found = [f"{where}{key}" for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += unknown_keys(getattr(value, name), f"{where}{name}.")
        return found
    if isinstance(value, dict):
        return [k for key, v in value.items() for k in unknown_keys(v, f"{where}{key}.")]
    if isinstance(value, list):
        return [k for item in value for k in unknown_keys(item, where)]
    return []


def test_a_real_buffers_stats_validate_before_and_after_a_stream() -> None:
    inp, out = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    config = BufferConfig(
        input=inp, output=out, expect_producers=1, metrics="127.0.0.1:0", persistent=True,
        drain_timeout_s=5,
    )  # fmt: skip
    buffer = Buffer(config).start()
    report = ReceiveReport(1)
    consumer = threading.Thread(
        target=lambda: list(receive_messages(out, bind=False, timeout_s=20, report=report))
    )
    consumer.start()
    base = f"http://127.0.0.1:{buffer.metrics_port}"
    try:
        live = parse_stats(httpx.get(f"{base}/stats").json())
        assert live.state == "running" and live.last_stream is None
        assert not live.stream_finished()
        with open_sender(inp, send_timeout_s=10) as sender:
            for _ in range(4):
                sender.send(BLOB)
            sender.send(EndOfStream(producer="p0", rank=0, events=40, messages=4).encode())
        consumer.join(20)
        deadline = time.monotonic() + 15
        while not (stats := parse_stats(httpx.get(f"{base}/stats").json())).stream_finished():
            assert time.monotonic() < deadline, "the stream never finished"
            time.sleep(0.05)
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        buffer.stop(10)
    assert isinstance(stats.last_stream, StreamReport)
    assert stats.last_stream.state == "done" and stats.last_stream.problems == []
    assert stats.messages_in == 4  # data messages; end records are not counted
    assert stats.last_stream.producers.per_producer["p0"].events == 40
    assert stats.input is not None and stats.input.url == inp
    summary = summarize_report(stats.last_stream)
    assert (summary.ok, summary.events, summary.messages, summary.lost) == (True, 40, 4, 0)
    # the document round-trips through the model unchanged, and has no key outside the schema
    document = buffer.stats()
    assert BufferStats.model_validate(document).model_dump(mode="json") == document
    assert unknown_keys(stats) == []
    assert f"lclstream_buffer_messages_in_total {float(stats.messages_in)}" in metrics
    assert "process_resident_memory_bytes" in metrics  # prometheus_client's process metrics


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"state": "exploded"}, "state"),
        ({"state": "running", "messages_in": "many"}, "messages_in"),
        ({"state": "running", "producers": {"per_producer": {"p0": {"events": []}}}},
         "producers.per_producer.p0.events"),
        ({"messages_in": 3}, "state"),
        ([1, 2], "(document)"),
    ],
)  # fmt: skip
def test_a_malformed_document_says_what_and_where(document: object, where: str) -> None:
    with pytest.raises(StatsDocumentError, match="not a buffer stats document") as info:
        parse_stats(document, "http://h:1/stats")
    assert where in str(info.value) and "http://h:1/stats" in str(info.value)


def test_readers_keep_keys_they_do_not_know() -> None:
    stats = parse_stats({"state": "draining", "messages_in": 2, "from_a_newer_buffer": 1})
    assert stats.messages_in == 2 and stats.messages_out == 0
    assert unknown_keys(stats) == ["from_a_newer_buffer"]
    assert 'lclstream_buffer_state{state="draining"} 1.0' in prometheus_text(stats)
