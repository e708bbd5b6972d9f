"""BinaryFileWritingDataHandler and BinaryDataStreamingDataHandler."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_provider_lclstream.transports import Sender, open_sender

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_lclstream.config import streamer_components as cfg
    from airflow_provider_lclstream.protocol import EndOfStream
    from airflow_provider_lclstream.transports.base import Payload


class DataHandler(ABC):
    @abstractmethod
    def handle(self, message: Payload) -> None:
        """Deliver one data message."""

    def broadcast(self, message: Payload) -> None:
        """Deliver a message every receiver must see (a stream sends it on every link)."""
        self.handle(message)

    def end(  # noqa: B027 - optional hook
        self, end_of_stream: EndOfStream, encode: Callable[[EndOfStream], bytes] | None = None
    ) -> None:
        """Deliver this producer's end-of-stream record (streams only), ``encode``d (default:
        the record's own ``encode``)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources; nothing queued is dropped."""


class BinaryFileWritingDataHandler(DataHandler):
    """Write each message to ``{prefix_}r{rank}_{counter}.{suffix}`` atomically (temp + rename)."""

    def __init__(self, directory: str, prefix: str, suffix: str, rank: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stem = f"{prefix}_r{rank}" if prefix else f"r{rank}"
        self.suffix = suffix.lstrip(".")
        self.counter = 0
        self.written: list[Path] = []

    def handle(self, message: Payload) -> None:
        final = self.directory / f"{self.stem}_{self.counter}.{self.suffix}"
        temporary = final.with_name(f".{final.name}.tmp")
        with open(temporary, "wb") as out:
            out.write(message)
        os.replace(temporary, final)
        self.counter += 1
        self.written.append(final)


class BinaryDataStreamingDataHandler(DataHandler):
    """PUSH messages over NNG or ZeroMQ; rank r uses ``urls[r % len(urls)]`` when distributing.

    Without ``distribute`` a client dials every URL (the transport round-robins between them);
    a server listens on its URL (with ``distribute``) or on the first one. ``buffer`` is the
    OS socket send buffer in bytes (ZeroMQ only; 0: the OS default).
    """

    def __init__(
        self,
        urls: list[str],
        library: str,
        role: str,
        distribute: bool,
        rank: int,
        send_timeout_s: float | None,
        buffer: int = 0,
    ) -> None:
        chosen = [urls[rank % len(urls)]] if distribute or role == "server" else list(urls)
        self.senders: list[Sender] = []
        for url in chosen:
            self.senders.append(
                open_sender(
                    url,
                    library,
                    bind=role == "server",
                    send_timeout_s=send_timeout_s,
                    socket_buffer_bytes=buffer,
                )
            )
        self.next = 0
        self.sent = [0] * len(self.senders)
        self.sent_bytes = [0] * len(self.senders)

    def handle(self, message: Payload) -> None:
        index = self.next % len(self.senders)
        self.next += 1
        self.senders[index].send(message)
        self.sent[index] += 1
        self.sent_bytes[index] += len(message)

    def broadcast(self, message: Payload) -> None:
        for index, sender in enumerate(self.senders):
            sender.send(message)
            self.sent[index] += 1
            self.sent_bytes[index] += len(message)

    def end(
        self, end_of_stream: EndOfStream, encode: Callable[[EndOfStream], bytes] | None = None
    ) -> None:
        """Send the record on every link, with the messages and bytes sent on that link."""
        for index, sender in enumerate(self.senders):
            record = replace(end_of_stream, messages=self.sent[index], bytes=self.sent_bytes[index])
            sender.send(encode(record) if encode is not None else record.encode())

    def close(self) -> None:
        for sender in self.senders:
            sender.close()


# Engines of the handler classes, named in the component registry (config/streamer.py).


def file_handler(
    spec: cfg.BinaryFileWritingDataHandler, rank: int, send_timeout_s: float | None
) -> BinaryFileWritingDataHandler:
    return BinaryFileWritingDataHandler(
        spec.write_directory, spec.file_prefix, spec.file_suffix, rank
    )


def streaming_handler(
    spec: cfg.BinaryDataStreamingDataHandler, rank: int, send_timeout_s: float | None
) -> BinaryDataStreamingDataHandler:
    return BinaryDataStreamingDataHandler(
        list(spec.urls), spec.library, spec.role, spec.distribute, rank, send_timeout_s,
        spec.buffer,
    )  # fmt: skip
