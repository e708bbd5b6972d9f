"""InternalEventSource: every rank generates ``number_of_events_to_generate`` events itself,
at most ``events_per_second`` of them per second when that is set."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from airflow_provider_lclstream.streamer.sources.base import (
    EventSource,
    Partition,
    RawEvent,
    generic_value,
    unsupported,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_lclstream.config import streamer_components as cfg
    from airflow_provider_lclstream.config.streamer import StreamerConfig


class InternalEventSource(EventSource):
    def __init__(self, config: StreamerConfig, partition: Partition) -> None:
        spec = cast("cfg.InternalEventSource", config.event_source)  # the registry's choice
        self.count = spec.number_of_events_to_generate
        self.rate = spec.events_per_second
        self.partition = partition
        self.readers = {}
        for name, source in config.data_sources.items():
            reader = generic_value(name, source, config.source_identifier, seed=partition.rank)
            if reader is None:
                raise unsupported("InternalEventSource", name, source)
            self.readers[name] = reader

    def events(self, max_events: int | None) -> Iterator[tuple[str, RawEvent]]:
        total = self.count if max_events is None else min(self.count, max_events)
        start = time.monotonic()
        for index in range(total):
            if self.rate is not None:  # event i is due i / rate seconds after the first
                time.sleep(max(0.0, start + index / self.rate - time.monotonic()))
            # Synthetic frames differ between ranks: rank r makes frames r, r+size, ...
            global_index = index * self.partition.size + self.partition.rank
            yield (
                f"r{self.partition.rank}/{index}",
                {name: read(global_index) for name, read in self.readers.items()},
            )
