"""Iterate messages from a URL as ``dict[str, ndarray]`` + metadata until every producer ended.

Producers are counted by their end-of-stream records; each HDF5 message from our streamer also
carries ``lclstream_producer``/``lclstream_seq`` attributes, which give per-producer counts and
gaps. Messages that are neither HDF5 nor end-of-stream (e.g. Simplon) are passed through raw.
A corrupt message is reported with its index and the receiver goes on. A message over
``max_message_bytes`` is refused by the transport before it is buffered (its connection is
dropped), so it shows as missing against its producer's end-of-stream count.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_provider_lclstream.exceptions import ProtocolError
from airflow_provider_lclstream.protocol import EndOfStream, is_end_of_stream, is_hdf5
from airflow_provider_lclstream.transports import open_receiver
from airflow_provider_lclstream.transports.base import DEFAULT_MAX_MESSAGE_MB

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)


@dataclass
class Message:
    """One data message: its raw bytes, root attributes and dataset shapes (read cheaply).

    ``data`` (every dataset by HDF5 path) is read on first access; it is empty for non-HDF5
    messages such as Simplon's.
    """

    index: int
    raw: bytes
    attrs: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    received_at: float = field(default_factory=time.time)  # wall clock as the receive returned

    @cached_property
    def data(self) -> dict[str, np.ndarray]:
        if not self.shapes:
            return {}
        from airflow_provider_lclstream.streamer.serializers.hdf5 import parse_hdf5_message

        return parse_hdf5_message(self.raw)[0]

    @property
    def events(self) -> int:
        """Events in the message: the first axis of its largest dataset (1 when unknown)."""
        shapes = [s for s in self.shapes.values() if len(s) >= 1]
        if not shapes:
            return 1
        return int(max(shapes, key=lambda s: int(np.prod(s)))[0])


@dataclass
class ProducerCounts:
    received: int = 0
    events_received: int = 0  # events of the messages that arrived (the record may never come)
    seqs: set[int] = field(default_factory=set)
    ended: EndOfStream | None = None


@dataclass
class ReceiveReport:
    """What was received; ``ok`` when every expected producer ended and nothing is missing."""

    expect_producers: int
    messages: int = 0
    events: int = 0
    bytes: int = 0
    corrupt: list[int] = field(default_factory=list)
    producers: dict[str, ProducerCounts] = field(default_factory=dict)
    ended: list[EndOfStream] = field(default_factory=list)
    timed_out: bool = False
    started: float = field(default_factory=time.monotonic)
    first_message_s: float | None = None
    unattributed: int = 0  # data messages that name no producer (raw, or HDF5 without attrs)
    ended_by_idle: bool = False  # end_after_idle_s: the link went quiet before every record came

    @property
    def eos(self) -> bool:
        """Every expected producer's end-of-stream record arrived: completeness is known."""
        return len(self.ended) >= self.expect_producers

    @property
    def idle_ok(self) -> bool:
        """Ended by idleness with nothing wrong in what came: complete or not, nobody can say."""
        return self.ended_by_idle and not self.corrupt and self.missing_messages == 0

    @property
    def missing_messages(self) -> int:
        """Messages the producers say they sent on this link that never arrived.

        A buffer's record counts what it sent to all its consumers together, so a consumer
        behind a buffer cannot check a share: only direct producer links are checked. A
        producer that names itself in its messages is checked against its own; only producers
        that do not share the unattributed messages, so a stray message can never stand in for
        a lost one. Corrupt messages arrived (and fail the report), so they are not missing.
        """
        direct = [e for e in self.ended if not is_shared(e)]
        if not direct:
            return 0
        named = 0
        anonymous = 0
        for record in direct:
            counts = self.producers.get(record.producer)
            if counts is not None and counts.received:
                named += max(0, record.messages - counts.received)
            else:
                anonymous += record.messages
        return max(0, named + max(0, anonymous - self.unattributed) - len(self.corrupt))

    def gaps(self) -> dict[str, int]:
        """Per producer that announced more messages on this link than arrived: how many."""
        return {
            name: c.ended.messages - c.received
            for name, c in self.producers.items()
            if c.ended is not None and not is_shared(c.ended) and c.received < c.ended.messages
        }

    @property
    def ok(self) -> bool:
        return (
            not self.timed_out
            and len(self.ended) >= self.expect_producers
            and self.missing_messages == 0
            and not self.corrupt
        )

    def summary(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "ok": self.ok,
            "eos": self.eos,
            "ended_by_idle": self.ended_by_idle,
            "messages": self.messages,
            "events": self.events,
            "bytes": self.bytes,
            "mb_per_s": round(self.bytes / elapsed / 1e6, 3),
            "elapsed_s": round(elapsed, 3),
            "first_message_s": self.first_message_s,
            "producers_ended": len(self.ended),
            "expect_producers": self.expect_producers,
            "per_producer": {
                name: {
                    "received": c.received,
                    "events_received": c.events_received,
                    "eos": c.ended is not None,
                    "announced": c.ended.messages if c.ended else None,
                    "events": c.ended.events if c.ended else None,
                    "skipped": c.ended.skipped if c.ended else None,
                }
                for name, c in self.producers.items()
            },
            "missing_messages": self.missing_messages,
            "gaps": self.gaps(),
            "corrupt": self.corrupt,
            "unattributed": self.unattributed,
            "timed_out": self.timed_out,
        }


def is_shared(record: EndOfStream) -> bool:
    """A buffer's record: its counts cover every consumer of the buffer, not this link."""
    return record.extra.get("kind") == "lclstream-buffer"


def parse_message(index: int, raw: bytes) -> Message:
    """Read a message's attributes and dataset shapes (not the data)."""
    if not is_hdf5(raw):
        return Message(index, raw, {}, {})
    from airflow_provider_lclstream.streamer.serializers.hdf5 import read_hdf5_header

    try:
        attrs, shapes = read_hdf5_header(raw)
    except Exception as err:
        raise ProtocolError(f"message {index}: corrupt HDF5 image: {err}") from err
    return Message(index, raw, attrs, shapes)


def receive_messages(
    url: str,
    library: str = "zmq",
    *,
    bind: bool = True,
    expect_producers: int = 1,
    timeout_s: float | None = 60.0,
    report: ReceiveReport | None = None,
    max_message_bytes: int = int(DEFAULT_MAX_MESSAGE_MB * 10**6),
    end_after_idle_s: float | None = None,
) -> Iterator[Message]:
    """Yield data messages until ``expect_producers`` end-of-stream records arrived.

    ``timeout_s`` is the longest wait for the next message; on timeout the iteration stops with
    ``report.timed_out`` set. Pass a ``ReceiveReport`` to read the totals afterwards.
    ``max_message_bytes`` bounds one message (0: no limit); see the module docstring.
    ``end_after_idle_s`` is for producers that send no end-of-stream record (upstream's): once
    something arrived, that long without a message ends the stream with ``report.ended_by_idle``
    set (``report.eos`` false unless every record came), not as a timeout.
    """
    report = report if report is not None else ReceiveReport(expect_producers)
    index = 0
    seen_records: set[tuple[str, object]] = set()
    with open_receiver(url, library, bind=bind, max_message_bytes=max_message_bytes) as receiver:
        while len(report.ended) < expect_producers:
            quiet = end_after_idle_s is not None and (report.messages or report.ended)
            raw = receiver.recv(end_after_idle_s if quiet else timeout_s)
            received_at = time.time()
            if raw is None and quiet:
                report.ended_by_idle = True
                log.info(
                    "no message for %s s: ended by idleness, %d of %d end-of-stream records",
                    end_after_idle_s,
                    len(report.ended),
                    expect_producers,
                )
                return
            if raw is None:
                report.timed_out = True
                log.warning(
                    "no message for %s s: %d of %d producers ended",
                    timeout_s,
                    len(report.ended),
                    expect_producers,
                )
                return
            if is_end_of_stream(raw):
                try:
                    record = EndOfStream.decode(raw)
                except ProtocolError as err:
                    log.error("message %d: %s", index, err)
                    report.corrupt.append(index)
                    index += 1
                    continue
                key = (record.producer, record.extra.get("stream_id"))
                if key in seen_records:
                    continue  # a buffer may send its record more than once to be sure
                seen_records.add(key)
                report.ended.append(record)
                report.producers.setdefault(record.producer, ProducerCounts()).ended = record
                continue
            try:
                message = parse_message(index, raw)
            except ProtocolError as err:
                log.error("%s (skipped)", err)
                report.corrupt.append(index)
                index += 1
                continue
            message.received_at = received_at
            if report.first_message_s is None:
                report.first_message_s = round(time.monotonic() - report.started, 3)
            report.messages += 1
            report.bytes += len(raw)
            report.events += message.events
            producer = message.attrs.get("lclstream_producer")
            if isinstance(producer, str):
                counts = report.producers.setdefault(producer, ProducerCounts())
                counts.received += 1
                counts.events_received += message.events
                seq = message.attrs.get("lclstream_seq")
                if isinstance(seq, int):
                    counts.seqs.add(seq)
            else:
                report.unattributed += 1
            index += 1
            yield message
