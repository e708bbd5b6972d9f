"""Psana1EventSource: LCLS-I data through psana1's API.

UNVERIFIED against real psana1: psana1 cannot be installed here (the ``psana`` on PyPI is
psana2). The code follows psana1's documented API (``DataSource('exp=..:run=..:smd')``,
``psana.Detector(name)``, ``evt.get(EventId)``) and is tested with a psana1-shaped fake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_provider_lclstream.config.streamer_components import (
    Psana1DetectorInterface,
    Psana1Timestamp,
)
from airflow_provider_lclstream.exceptions import LCLStreamError, MissingDependencyError
from airflow_provider_lclstream.streamer.sources.base import (
    EventSource,
    Partition,
    RawEvent,
    first_of,
    generic_value,
    unsupported,
)
from airflow_provider_lclstream.streamer.sources.psana2 import detector_reader

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_lclstream.config.streamer import StreamerConfig


PSANA1_HOWTO = (
    "psana1 is not on PyPI (the 'psana' there is psana2): run the streamer in an LCLS-I "
    "analysis environment (at SLAC: `source /sdf/group/lcls/ds/ana/sw/conda1/manage/bin/"
    "psconda.sh`); for an LCLS-II experiment set psana: 2"
)


class Psana1MissingError(MissingDependencyError):
    """psana1 cannot be imported (or the installed psana is psana2); says how to get it."""

    def __init__(self, detail: str) -> None:
        self.package, self.extra = "psana1", "psana"
        LCLStreamError.__init__(self, f"{detail}: {PSANA1_HOWTO}")


def import_psana1() -> Any:
    """psana1's module; psana2 (which shares the name) is refused with the same clear error."""
    try:
        import psana
    except ImportError as err:
        raise Psana1MissingError("psana1 is not installed (needed for Psana1EventSource)") from err
    if not hasattr(psana, "Detector") or hasattr(psana, "psexp"):
        raise Psana1MissingError("the installed psana is psana2, not psana1")
    return psana


def psana1_timestamp(psana: Any, evt: Any) -> np.ndarray:
    """Event time as float seconds (seconds + nanoseconds of the EventId)."""
    seconds, nanoseconds = evt.get(psana.EventId).time()
    return np.asarray(seconds + nanoseconds * 1e-9, dtype=np.float64)


class Psana1EventSource(EventSource):
    """``source_identifier`` is psana1's own (``exp=xpptut15:run=54:smd``)."""

    def __init__(
        self, config: StreamerConfig, partition: Partition, psana_module: Any = None
    ) -> None:
        self.config = config
        self.partition = partition
        self.psana = psana_module if psana_module is not None else import_psana1()
        self.readers: dict[str, Callable[[Any], Any]] = {}
        for name, source in config.data_sources.items():
            if isinstance(source, Psana1DetectorInterface):
                detector = self.psana.Detector(source.psana_name)
                self.readers[name] = detector_reader(detector, source, pv_takes_event=False)
            elif isinstance(source, Psana1Timestamp):
                self.readers[name] = lambda evt: psana1_timestamp(self.psana, evt)
            else:
                generic = generic_value(name, source, config.source_identifier, 0)
                if generic is None:
                    raise unsupported("Psana1EventSource", name, source)
                self.readers[name] = first_of(generic)

    def events(self, max_events: int | None) -> Iterator[tuple[str, RawEvent]]:
        ds = self.psana.DataSource(self.config.source_identifier)
        produced = 0
        for index, evt in enumerate(ds.events()):
            if not self.partition.owns(index):
                continue
            if max_events is not None and produced >= max_events:
                return
            produced += 1
            event: RawEvent = {}
            for name, read in self.readers.items():
                try:
                    event[name] = read(evt)
                except Exception:
                    event[name] = None
            yield f"{index}", event
