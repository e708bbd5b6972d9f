"""Psana2EventSource: LCLS-II data through psana2's ``DataSource``.

``source_identifier`` is ``exp=..,run=..[,dir=..][,max_events=..]`` or ``files=a.xtc2[;b.xtc2]``.
With several MPI ranks psana's own MPI mode spreads events when it runs (``MPIDataSource``);
otherwise (one file, serial mode on each rank) rank r keeps events r, r+size, ...

Calibration constants come from the facility's web services. Reading ``files=`` or with
``LCLSTREAM_PSANA_OFFLINE=1`` skips loading them (``skip_calib_load="all"``) with a warning:
``raw.calib``/``raw.image`` then use psana's defaults. Offline, ``exp=..,run=..,dir=..`` finds
the run's files in ``dir`` by psana's file naming instead of asking the run database.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_provider_lclstream.config.streamer_components import (
    Psana2DetectorInterface,
    Psana2RunInfo,
    Psana2Timestamp,
    _DetectorInterface,
)
from airflow_provider_lclstream.exceptions import LCLStreamError, MissingDependencyError
from airflow_provider_lclstream.streamer.sources.base import (
    EventSource,
    Partition,
    RawEvent,
    constant,
    first_of,
    generic_value,
    unsupported,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_lclstream.config.streamer import StreamerConfig

log = logging.getLogger(__name__)
INT_KEYS = {"run", "max_events", "batch_size"}


def parse_source_identifier(text: str) -> dict[str, Any]:
    """``exp=x,run=3,files=a;b`` -> DataSource keyword arguments."""
    kwargs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise LCLStreamError(
                f"source_identifier: {part!r} is not key=value "
                "(expected e.g. 'exp=mfxl1234567,run=12' or 'files=/path/run.xtc2')"
            )
        key = key.strip()
        if key in INT_KEYS:
            try:
                kwargs[key] = int(value)
            except ValueError:
                raise LCLStreamError(
                    f"source_identifier: {key}={value!r} is not an integer"
                ) from None
        elif key == "live":
            kwargs[key] = value.strip().lower() in ("1", "true", "yes")
        elif key == "files":
            files = [f for f in value.split(";") if f]
            kwargs[key] = files[0] if len(files) == 1 else files
        else:
            kwargs[key] = value
    if "files" not in kwargs and not ("exp" in kwargs and "run" in kwargs):
        raise LCLStreamError(
            f"source_identifier {text!r} names no data: give exp=..,run=.. or files=..."
        )
    return kwargs


def files_on_disk(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Offline ``exp=..,run=..,dir=..``: the run's xtc2 files found in ``dir`` by psana's naming
    (``<exp>-r<run:04d>-s<stream>-c<chunk>.xtc2``), read as ``files=`` so psana asks no web
    service where they are."""
    pattern = f"{kwargs['exp']}-r{int(kwargs['run']):04d}-s*-c*.xtc2"
    found = sorted(glob.glob(os.path.join(kwargs["dir"], pattern)))
    if not found:
        raise LCLStreamError(f"offline: no file {pattern} in {kwargs['dir']}")
    rest = {k: v for k, v in kwargs.items() if k not in ("exp", "run", "dir")}
    return {**rest, "files": found[0] if len(found) == 1 else found}


def call_chain(obj: Any, chain: str, evt: Any) -> Any:
    """Follow ``raw.calib`` on a detector, calling each callable link with the event.

    A link that takes no event is called bare: ``get.TotalIntensity`` is
    ``get(evt).TotalIntensity()``.
    """
    for part in chain.split("."):
        obj = getattr(obj, part)
        if callable(obj):
            try:
                obj = obj(evt)
            except TypeError:
                obj = obj()
    return obj


def as_array(value: Any, dtype: str | None) -> np.ndarray | None:
    if value is None:
        return None
    try:
        return np.asarray(value, dtype=dtype) if dtype else np.asarray(value)
    except (TypeError, ValueError) as err:
        raise LCLStreamError(
            f"cannot convert {type(value).__name__} to dtype {dtype}: {err}"
        ) from err


def detector_reader(
    detector: Any, config: _DetectorInterface, pv_takes_event: bool = True
) -> Callable[[Any], Any]:
    """A callable ``evt -> ndarray | None`` reading one detector's field chain(s), or a PV.

    A PV detector is called with the event in psana2 and bare in psana1.
    """
    fields = list(config.psana_fields)
    if not fields:
        if pv_takes_event:
            return lambda evt: as_array(detector(evt), config.dtype)
        return lambda evt: as_array(detector(), config.dtype)
    if len(fields) == 1:
        return lambda evt: as_array(call_chain(detector, fields[0], evt), config.dtype)

    def several(evt: Any) -> np.ndarray | None:
        values = [call_chain(detector, f, evt) for f in fields]
        if any(v is None for v in values):
            return None
        return as_array([np.asarray(v).tolist() for v in values], config.dtype or None)

    return several


def import_psana2() -> Any:
    try:
        import psana
    except ImportError as err:
        raise MissingDependencyError("psana (psana2)", "psana", "Psana2EventSource") from err
    if not hasattr(psana, "DataSource"):
        raise MissingDependencyError("psana (psana2)", "psana", "Psana2EventSource")
    return psana


class Psana2EventSource(EventSource):
    def __init__(self, config: StreamerConfig, partition: Partition) -> None:
        self.config = config
        self.partition = partition
        self.kwargs = parse_source_identifier(config.source_identifier)
        self.psana = import_psana2()
        offline = os.environ.get("LCLSTREAM_PSANA_OFFLINE") == "1"
        if offline and "files" not in self.kwargs and "dir" in self.kwargs:
            self.kwargs = files_on_disk(self.kwargs)
        if "files" in self.kwargs or offline:
            log.warning(
                "psana2: reading offline, calibration constants are not loaded "
                "(skip_calib_load='all'); raw.calib uses psana's defaults"
            )
            self.kwargs.setdefault("skip_calib_load", "all")

    def _readers(self, run: Any) -> dict[str, Callable[[Any], Any]]:
        readers: dict[str, Callable[[Any], Any]] = {}
        for name, source in self.config.data_sources.items():
            if isinstance(source, Psana2DetectorInterface):
                try:
                    readers[name] = detector_reader(run.Detector(source.psana_name), source)
                except Exception as err:
                    raise LCLStreamError(
                        f"data_sources.{name}: psana2 has no detector {source.psana_name!r} "
                        f"in run {run.runnum} (detectors: {sorted(run.detnames)}): {err}"
                    ) from err
            elif isinstance(source, Psana2Timestamp):
                readers[name] = lambda evt: np.uint64(evt.timestamp)
            elif isinstance(source, Psana2RunInfo):
                readers[name] = constant(np.asarray([str(run.expt), str(run.runnum)]))
            else:
                generic = generic_value(name, source, self.config.source_identifier, 0)
                if generic is None:
                    raise unsupported("Psana2EventSource", name, source)
                readers[name] = first_of(generic)
        return readers

    def events(self, max_events: int | None) -> Iterator[tuple[str, RawEvent]]:
        kwargs = dict(self.kwargs)
        limit = kwargs.pop("max_events", None)
        if max_events is not None:
            limit = max_events if limit is None else min(limit, max_events)
        ds = self.psana.DataSource(**kwargs)
        psana_spreads = type(ds).__name__ == "MPIDataSource"
        produced = 0
        seen = 0
        files = kwargs.get("files")
        # Reading files, psana makes one run per file; asking it for one more run than that
        # costs about a second of waiting at the end of the data: stop after the last file.
        runs_left = (1 if isinstance(files, str) else len(files)) if files else None
        for run in ds.runs():
            readers = self._readers(run)
            for evt in run.events():
                index = seen
                seen += 1
                if not psana_spreads and not self.partition.owns(index):
                    continue
                if limit is not None and produced >= limit:
                    return
                produced += 1
                event: RawEvent = {}
                for name, read in readers.items():
                    try:
                        event[name] = read(evt)
                    except Exception as err:  # a detector missing from this event
                        log.debug("event %s: %s failed: %s", index, name, err)
                        event[name] = None
                yield f"run{run.runnum}/{index}", event
            if runs_left is not None:
                runs_left -= 1
                if runs_left == 0:
                    return
