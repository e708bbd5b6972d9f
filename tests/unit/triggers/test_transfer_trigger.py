"""TransferTrigger against a real in-process buffer (real sockets, real /stats endpoint)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from airflow_provider_lclstream.buffer import Buffer, BufferConfig
from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages
from airflow_provider_lclstream.protocol import EndOfStream
from airflow_provider_lclstream.streamer.serializers.hdf5 import HDF5BinarySerializer
from airflow_provider_lclstream.transfer.jobs import free_port
from airflow_provider_lclstream.transports import open_sender
from airflow_provider_lclstream.triggers.transfer import TransferTrigger

BLOB = bytes(HDF5BinarySerializer({"x": "/x"}).serialize({"x": np.zeros((10, 4))}, {}))


async def collect(trigger: TransferTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def persistent_buffer(producers: int) -> tuple[Buffer, str, str]:
    inp, out = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    buffer = Buffer(
        BufferConfig(
            input=inp,
            output=out,
            expect_producers=producers,
            metrics="127.0.0.1:0",
            persistent=True,
            drain_timeout_s=5,
        )
    ).start()
    return buffer, inp, out


def test_serialize_round_trip() -> None:
    trigger = TransferTrigger("http://h:1/", stall_timeout=9, linked_jobs=[[None, "j1"]])
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_lclstream.triggers.transfer.TransferTrigger"
    assert TransferTrigger(**kwargs).serialize() == (path, kwargs)
    assert kwargs["metrics_url"] == "http://h:1"


def test_success_with_final_numbers_after_the_stream() -> None:
    buffer, inp, out = persistent_buffer(producers=2)
    report = ReceiveReport(1)
    consumer = threading.Thread(
        target=lambda: list(receive_messages(out, bind=False, timeout_s=20, report=report))
    )
    consumer.start()
    try:
        for rank in range(2):
            with open_sender(inp, send_timeout_s=10) as sender:
                for _ in range(3):
                    sender.send(BLOB)
                sender.send(
                    EndOfStream(producer=f"p{rank}", rank=rank, events=30, messages=3).encode()
                )
        consumer.join(20)
        url = f"http://127.0.0.1:{buffer.metrics_port}"
        (event,) = asyncio.run(collect(TransferTrigger(url, poll_interval=0.2)))
    finally:
        buffer.stop(10)
    assert event["status"] == "success", event
    stats = event["stats"]
    assert stats["events"] == 60 and stats["messages"] == 6 and stats["lost"] == 0
    assert stats["producers_ended"] == 2
    assert set(stats["per_rank"]) == {"0", "1"}
    assert report.messages == 6


def test_stall_is_an_error_event() -> None:
    buffer, _, _ = persistent_buffer(producers=1)
    try:
        url = f"http://127.0.0.1:{buffer.metrics_port}"
        (event,) = asyncio.run(collect(TransferTrigger(url, poll_interval=0.1, stall_timeout=0.5)))
    finally:
        buffer.stop(10)
    assert event["status"] == "error" and "stalled" in event["message"]


def test_unreachable_buffer_is_an_error_event() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    (event,) = asyncio.run(collect(TransferTrigger(url, poll_interval=0.05, max_errors=3)))
    assert event["status"] == "error" and "unreachable 3 times" in event["message"]


@pytest.mark.parametrize("kind", ["job_state", "transfer"])
def test_on_kill_cancels_linked_jobs(kind: str, tmp_path, monkeypatch) -> None:
    """A user killing a transfer task cancels the other jobs of the transfer (local backend)."""
    from airflow_provider_lclstream.backends.local import LocalBackend
    from airflow_provider_lclstream.config.job import JobSpec
    from airflow_provider_lclstream.triggers.job_state import JobStateTrigger

    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(tmp_path))
    backend = LocalBackend(root=str(tmp_path))
    jobs = [
        backend.submit(JobSpec(name=f"j{i}", script="#!/bin/bash\nsleep 60\n")) for i in range(3)
    ]
    linked = [[None, job] for job in jobs[1:]]
    if kind == "job_state":
        trigger = JobStateTrigger(jobs[0], None, linked_jobs=linked)
    else:
        backend.cancel(jobs[0])
        trigger = TransferTrigger("http://127.0.0.1:1", linked_jobs=linked)
    asyncio.run(trigger.on_kill())
    for job in jobs:
        for _ in range(100):
            if backend.state(job).is_final:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert backend.state(job).state.value == "cancelled"


def test_first_event_waits_until_not_before() -> None:
    """A trigger holds its first event back until ``not_before`` (triggers/settle.py)."""
    import time

    url = f"http://127.0.0.1:{free_port()}"
    start = time.time()
    trigger = TransferTrigger(url, poll_interval=0.01, max_errors=1, not_before=start + 1.0)
    (event,) = asyncio.run(collect(trigger))
    assert event["status"] == "error"
    assert time.time() - start >= 1.0


def test_several_buffers_are_watched_together_and_summed() -> None:
    """Two real buffers, one producer each: the event comes once both streams ended, with the
    sums and each buffer's numbers in order; the URL list survives serialization."""
    first, second = persistent_buffer(producers=1), persistent_buffer(producers=1)
    reports = [ReceiveReport(1), ReceiveReport(1)]
    consumers = [
        threading.Thread(
            target=lambda out=out, report=report: list(
                receive_messages(out, bind=False, timeout_s=20, report=report)
            )
        )
        for (_, _, out), report in zip((first, second), reports, strict=True)
    ]
    for consumer in consumers:
        consumer.start()
    urls = [f"http://127.0.0.1:{b.metrics_port}" for b, _, _ in (first, second)]
    trigger = TransferTrigger(urls, poll_interval=0.2)
    assert TransferTrigger(**trigger.serialize()[1]).metrics_urls == urls
    try:
        for rank, (_, inp, _) in enumerate((first, second)):
            with open_sender(inp, send_timeout_s=10) as sender:
                for _ in range(rank + 2):
                    sender.send(BLOB)
                eos = EndOfStream(producer=f"p{rank}", rank=rank, events=10 * (rank + 2))
                sender.send(eos.encode())
        for consumer in consumers:
            consumer.join(20)
        (event,) = asyncio.run(collect(trigger))
    finally:
        for buffer, _, _ in (first, second):
            buffer.stop(10)
    assert event["status"] == "success", event
    stats = event["stats"]
    assert stats["events"] == 50 and stats["messages"] == 5 and stats["lost"] == 0
    assert stats["producers_ended"] == stats["producers_expected"] == 2
    assert [b["events"] for b in stats["buffers"]] == [20, 30]
    assert [b["messages"] for b in stats["buffers"]] == [2, 3]
    assert set(stats["per_rank"]) == {"0", "1"}
