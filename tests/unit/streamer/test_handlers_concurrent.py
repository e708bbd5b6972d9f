"""Data handlers run concurrently: a deliberately slow file writer does not hold up the stream."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest

from airflow_provider_lclstream.config.loader import validate_streamer_config
from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.streamer.engine import Streamer
from airflow_provider_lclstream.streamer.handlers import handlers
from airflow_provider_lclstream.streamer.handlers.handlers import BinaryFileWritingDataHandler
from tests.integration.streaming import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_lclstream.transports.base import Payload

EVENTS = 10
DELAY_S = 0.2


class SlowFileWriter(BinaryFileWritingDataHandler):
    """The real file writer on a deliberately slow file system: each write takes DELAY_S more."""

    def handle(self, message: Payload) -> None:
        time.sleep(DELAY_S)
        super().handle(message)


def config(url: str, out: Path, queue: int) -> dict:
    return {
        "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": EVENTS},
        "data_sources": {"detector_data": {"type": "SyntheticDetector", "shape": [32, 32]}},
        "processing_pipeline": {"type": "NoOpProcessingPipeline"},
        "data_serializer": {"type": "HDF5BinarySerializer"},
        "data_handlers": [
            {"type": "BinaryFileWritingDataHandler", "write_directory": str(out), "queue": queue},
            {"type": "BinaryDataStreamingDataHandler", "urls": [url], "library": "zmq"},
        ],
    }


def test_slow_file_writer_does_not_slow_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "BinaryFileWritingDataHandler", SlowFileWriter)
    url = f"tcp://127.0.0.1:{free_port()}"
    report = ReceiveReport(1)
    stream_done: list[float] = []

    def receive() -> None:
        for _ in receive_messages(url, "zmq", bind=True, timeout_s=30, report=report):
            pass
        stream_done.append(time.monotonic())

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    time.sleep(0.2)
    streamer = Streamer(validate_streamer_config(config(url, tmp_path / "out", EVENTS + 2)))
    started = time.monotonic()
    summary = streamer.run()
    finished = time.monotonic()
    receiver.join(30)
    assert report.ok and report.messages == EVENTS, report.summary()
    assert len(list((tmp_path / "out").iterdir())) == EVENTS  # every file written
    # the stream ended while the slow writer still had most of its work ahead of it
    assert finished - started >= EVENTS * DELAY_S
    assert stream_done[0] - started < EVENTS * DELAY_S / 2, stream_done[0] - started
    file_stats, stream_stats = summary["handlers"]
    assert file_stats["handler"] == "0:BinaryFileWritingDataHandler"
    assert file_stats["busy_s"] >= EVENTS * DELAY_S and file_stats["messages"] == EVENTS
    assert file_stats["max_backlog"] >= EVENTS // 2 and file_stats["backlog"] == 0
    assert stream_stats["busy_s"] < EVENTS * DELAY_S / 2
    assert stream_stats["messages"] == EVENTS
    assert stream_stats["blocked_s"] < 0.5


def test_full_queue_bounds_the_backlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "BinaryFileWritingDataHandler", SlowFileWriter)
    url = f"tcp://127.0.0.1:{free_port()}"
    cfg = config(url, tmp_path / "out", 2)
    cfg["data_handlers"] = cfg["data_handlers"][:1]
    summary = Streamer(validate_streamer_config(cfg)).run()
    [file_stats] = summary["handlers"]
    assert file_stats["queue"] == 2 and file_stats["max_backlog"] <= 2
    assert file_stats["blocked_s"] > DELAY_S  # the engine waited for room: backpressure
    assert len(list((tmp_path / "out").iterdir())) == EVENTS


class FullDiskWriter(BinaryFileWritingDataHandler):
    """The real file writer on a disk that fills up after three files."""

    def handle(self, message: Payload) -> None:
        if self.counter == 3:
            raise OSError(28, "No space left on device")
        super().handle(message)


def test_a_failing_handler_fails_the_run_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "BinaryFileWritingDataHandler", FullDiskWriter)
    cfg = config("tcp://127.0.0.1:1", tmp_path / "out", 4)
    cfg["data_handlers"] = cfg["data_handlers"][:1]
    streamer = Streamer(validate_streamer_config(cfg))
    with pytest.raises(LCLStreamError, match="data handler 0:BinaryFileWritingDataHandler failed"):
        streamer.run()
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_a_failing_inline_handler_fails_the_run_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "BinaryFileWritingDataHandler", FullDiskWriter)
    cfg = config("tcp://127.0.0.1:1", tmp_path / "out", 0)  # queue 0: on the engine's thread
    cfg["data_handlers"] = cfg["data_handlers"][:1]
    streamer = Streamer(validate_streamer_config(cfg))
    with pytest.raises(LCLStreamError, match="data handler 0:BinaryFileWritingDataHandler failed"):
        streamer.run()
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_the_streaming_handler_sends_on_the_engine_thread_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No handler thread in front of the transport's own queue (#18): the engine sends."""
    senders: set[str] = set()

    class Recording(handlers.BinaryDataStreamingDataHandler):  # type: ignore[misc,name-defined]
        def handle(self, message: Payload) -> None:
            senders.add(threading.current_thread().name)
            super().handle(message)

    monkeypatch.setattr(handlers, "BinaryDataStreamingDataHandler", Recording)
    url = f"tcp://127.0.0.1:{free_port()}"
    report = ReceiveReport(1)
    receiver = threading.Thread(
        target=lambda: list(receive_messages(url, "zmq", bind=True, timeout_s=30, report=report)),
        daemon=True,
    )
    receiver.start()
    time.sleep(0.2)
    cfg = config(url, tmp_path / "out", 8)
    cfg["data_handlers"] = cfg["data_handlers"][1:]
    summary = Streamer(validate_streamer_config(cfg)).run()
    receiver.join(30)
    assert report.ok and report.messages == EVENTS, report.summary()
    assert senders == {threading.current_thread().name}
    [stream_stats] = summary["handlers"]
    assert stream_stats["queue"] == 0 and stream_stats["max_backlog"] == 0
    assert stream_stats["messages"] == EVENTS
