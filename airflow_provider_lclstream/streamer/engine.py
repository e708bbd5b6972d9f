"""The LCLStreamer chain on one rank: event source -> pipeline -> serializer -> data handlers."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_provider_lclstream.config.streamer import (
    EVENT_SOURCES,
    HANDLERS,
    PIPELINES,
    SERIALIZERS,
)
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.protocol import EndOfStream, producer_name
from airflow_provider_lclstream.streamer.components import engine_for, step_for
from airflow_provider_lclstream.streamer.handlers.concurrent import InlineHandler, QueuedHandler
from airflow_provider_lclstream.streamer.sources.base import EventSource, Partition, RawEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_lclstream.config.streamer import StreamerConfig
    from airflow_provider_lclstream.streamer.handlers.handlers import DataHandler
    from airflow_provider_lclstream.streamer.pipelines.pipelines import ProcessingPipeline
    from airflow_provider_lclstream.streamer.serializers.base import Serializer
    from airflow_provider_lclstream.transports.base import Payload

log = logging.getLogger(__name__)


class IncompleteEventError(LCLStreamError):
    """An event lacks a value and ``skip_incomplete_events`` is false."""


def build_event_source(config: StreamerConfig, partition: Partition) -> EventSource:
    """The event source the config names (its engine from the component registry)."""
    source: EventSource = engine_for(EVENT_SOURCES, config.event_source)(config, partition)
    return source


def build_pipeline(config: StreamerConfig) -> ProcessingPipeline:
    spec = config.processing_pipeline
    steps: list[Callable[[Any], Any]] = [step_for(step) for step in spec.steps]
    pipeline: ProcessingPipeline = engine_for(PIPELINES, spec)(spec, steps)
    return pipeline


def build_serializer(config: StreamerConfig, rank: int = 0) -> Serializer:
    serializer: Serializer = engine_for(SERIALIZERS, config.data_serializer)(config, rank)
    return serializer


def build_handlers(
    config: StreamerConfig, partition: Partition, send_timeout_s: float | None
) -> list[DataHandler]:
    handlers: list[DataHandler] = []
    try:
        for spec in config.data_handlers:
            handlers.append(engine_for(HANDLERS, spec)(spec, partition.rank, send_timeout_s))
    except Exception:
        for opened in handlers:
            opened.close()
        raise
    return handlers


@dataclass
class Counters:
    """What one rank did; sent as its end-of-stream record and printed as its summary."""

    rank: int
    producer: str
    role: str = "reader"
    events: int = 0
    batches: int = 0
    messages: int = 0
    bytes: int = 0
    skipped: int = 0
    filtered: int = 0
    started: float = field(default_factory=time.monotonic)
    first_message_s: float | None = None
    handlers: list[dict[str, Any]] = field(default_factory=list)
    """Per data handler: queue size, max and final backlog, busy and blocked seconds."""

    def summary(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        out = {k: v for k, v in asdict(self).items() if k != "started"}
        out["elapsed_s"] = round(elapsed, 3)
        out["events_per_s"] = round(self.events / elapsed, 2)
        out["mb_per_s"] = round(self.bytes / elapsed / 1e6, 3)
        return out


def complete_events(
    events: Iterator[tuple[str, RawEvent]],
    skip_incomplete: bool,
    counters: Counters,
    on_event: Callable[[int], None] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Drop (and count) or refuse events with a missing value; ``on_event`` gets the event
    count after every event counted."""
    for event_id, event in events:
        missing = [name for name, value in event.items() if value is None]
        if missing:
            if not skip_incomplete:
                raise IncompleteEventError(
                    f"event {event_id}: no value from data source(s) {missing}; set "
                    "skip_incomplete_events: true to skip such events"
                )
            counters.skipped += 1
            continue
        counters.events += 1
        if on_event is not None:
            on_event(counters.events)
        yield event  # type: ignore[misc]


class Streamer:
    """One rank's run. ``progress`` is called with the counters every ``progress_every_s``."""

    def __init__(
        self,
        config: StreamerConfig,
        partition: Partition | None = None,
        send_timeout_s: float | None = 60.0,
        progress: Callable[[dict[str, Any]], None] | None = None,
        progress_every_s: float = 5.0,
        barrier: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.barrier = barrier  # returns once every rank called it (MPI); None: one rank
        self.partition = partition or Partition()
        self.send_timeout_s = send_timeout_s
        self.progress = progress
        self.progress_every_s = progress_every_s
        self.counters = Counters(self.partition.rank, producer_name(self.partition.rank))
        self.coupled = False  # set from the event source: do the ranks wait on each other?
        self.stream_ended = False  # this rank's end records went out (its counts are known)
        self.checkpoint: Callable[[Counters], None] | None = None
        """Called once the source is built and after every batch handed to the handlers, with
        the counters as they stand (``streamer/tally.py`` keeps them)."""
        self.count_event: Callable[[int], None] | None = None
        """Called with the event count after every event counted (``Tally.count``)."""

    def run(self, max_events: int | None = None) -> dict[str, Any]:
        source = build_event_source(self.config, self.partition)
        pipeline = build_pipeline(self.config)
        serializer = build_serializer(self.config, self.partition.rank)
        handlers = [
            QueuedHandler(handler, spec.queue, f"{i}:{spec.type}")
            if spec.queue
            else InlineHandler(handler, f"{i}:{spec.type}")
            for i, (handler, spec) in enumerate(
                zip(
                    build_handlers(self.config, self.partition, self.send_timeout_s),
                    self.config.data_handlers,
                    strict=True,
                )
            )
        ]
        counters = self.counters
        counters.role = source.role
        self.coupled = source.coupled
        if self.checkpoint is not None:
            self.checkpoint(counters)
        extra_meta = source.metadata
        last_report = time.monotonic()
        completed = False
        try:
            for message in serializer.start():
                self._deliver(handlers, message, broadcast=True)
            events = complete_events(
                source.events(max_events),
                self.config.skip_incomplete_events,
                counters,
                self.count_event,
            )
            for batch, _size in pipeline.batches(events):
                if serializer.batch_axis and not pipeline.stack:  # one event: add the axis
                    batch = {name: np.asarray(v)[np.newaxis] for name, v in batch.items()}
                meta = {
                    "producer": counters.producer,
                    "rank": counters.rank,
                    "seq": counters.batches,
                    **extra_meta,
                }
                if counters.batches == 0:
                    for header in serializer.header(batch):
                        self._deliver(handlers, header, broadcast=True)
                for data in serializer.messages(batch, meta):
                    self._deliver(handlers, data)
                counters.batches += 1
                if self.checkpoint is not None:
                    self.checkpoint(counters)
                if self.progress and time.monotonic() - last_report >= self.progress_every_s:
                    last_report = time.monotonic()
                    self.progress(counters.summary())
            for message in serializer.finish():
                self._deliver(handlers, message)
            counters.filtered = pipeline.dropped
            record = EndOfStream(
                producer=counters.producer,
                rank=counters.rank,
                events=counters.events,
                batches=counters.batches,
                messages=counters.messages,
                bytes=counters.bytes,
                skipped=counters.skipped,
                extra={"filtered": counters.filtered, "role": counters.role},
            )
            if serializer.end_after_all_ranks and self.barrier is not None:
                for handler in handlers:
                    handler.flush()
                self.barrier()  # every rank's last message is out: the end records follow
            for handler in handlers:
                handler.end(record, serializer.encode_end)
            self.stream_ended = True
            completed = True
            if source.end_error is not None:
                raise source.end_error
        finally:
            failure: BaseException | None = None
            for handler in handlers:  # each drains its queue; all are closed, first error wins
                try:
                    handler.close()
                except BaseException as err:
                    failure = failure or err
            counters.handlers = [handler.stats() for handler in handlers]
            source.close()
            if failure is not None and completed:  # else the run's own error is raised
                raise failure
        return counters.summary()

    def _deliver(
        self,
        handlers: list[QueuedHandler | InlineHandler],
        message: Payload,
        broadcast: bool = False,
    ) -> None:
        """Hand one message to every handler (``broadcast``: on every link of a stream)."""
        if self.counters.first_message_s is None:
            self.counters.first_message_s = round(time.monotonic() - self.counters.started, 3)
        for handler in handlers:
            if broadcast:
                handler.broadcast(message)
            else:
                handler.handle(message)
        self.counters.messages += 1
        self.counters.bytes += len(message)
