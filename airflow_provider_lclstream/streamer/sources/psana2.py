"""Psana2EventSource: LCLS-II data through psana2's ``DataSource``.

``source_identifier`` is ``exp=..,run=..[,dir=..][,live=1][,max_events=..]`` or
``files=a.xtc2[;b.xtc2]``. Three ways to read:

- **smd** (``exp/run``, smalldata in ``dir/smalldata``): psana's own parallel mode. Under
  ``mpiexec -n N`` rank 0 is smd0, ranks ``1..PS_EB_NODES`` are event builders (they read only
  smalldata) and the rest are big-data ranks, each given its own events by psana: the engine
  does not partition again. psana needs 1 rank (serial) or at least 3.
- **live** (``live=1``): the same, with psana's ``live=True``: it follows the run's
  ``.xtc2.inprogress`` files until EndRun (the files renamed). :class:`PsanaKnobs` sets how soon
  events are handed out.
- **files** (``files=``, or ``exp/run/dir`` with no smalldata): every rank reads every file and
  keeps events r, r+size, ... (N-fold I/O; ad-hoc files only).

The logbook lookup goes through :mod:`.psana_logbook` (configurable URL, no crash offline).
Calibration: a detector read as ``raw.calib``/``raw.image`` needs the constants; when they cannot
be loaded (offline, ``files=``, web service down) the stream fails unless the config says
``calibration: skip``, which is then written into every message's metadata.
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
from airflow_provider_lclstream.streamer.sources.psana_logbook import LIVE_POLL_ENV

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_lclstream.config.streamer import StreamerConfig

log = logging.getLogger(__name__)
INT_KEYS = {"run", "max_events", "batch_size"}
CALIB_LINKS = ("calib", "image")
#: psana environment variable of each knob (``PsanaKnobs``); batch_size is a DataSource kwarg.
KNOB_ENV = {
    "smd_n_events": "PS_SMD_N_EVENTS",
    "smd_chunksize": "PS_SMD_CHUNKSIZE",
    "file_list_stable_polls": "PS_LIVE_FILE_LIST_STABLE_POLLS",
    "max_retries": "PS_R_MAX_RETRIES",
    "live_poll_s": LIVE_POLL_ENV,  # read by psana_logbook's live wait, not by psana
}
#: Knob defaults of live mode (low latency); offline, psana's own defaults apply.
LIVE_DEFAULTS = {"batch_size": 10, "smd_n_events": 10, "file_list_stable_polls": 1}


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
    """``exp=..,run=..,dir=..`` without smalldata: the run's xtc2 files found in ``dir`` by
    psana's naming (``<exp>-r<run:04d>-s<stream>-c<chunk>.xtc2``), read as ``files=``."""
    pattern = f"{kwargs['exp']}-r{int(kwargs['run']):04d}-s*-c*.xtc2"
    found = sorted(glob.glob(os.path.join(kwargs["dir"], pattern)))
    if not found:
        raise LCLStreamError(
            f"run not found: no file {pattern} in {kwargs['dir']} (nor smalldata "
            f"{kwargs['dir']}/smalldata/{pattern[:-5]}.smd.xtc2)"
        )
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


def psana_role(rank: int, size: int) -> str:
    """This rank's role in psana2's parallel mode (psexp/node.py): smd0, eb, bd or srv."""
    if size == 1:
        return "serial"
    n_eb = int(os.environ.get("PS_EB_NODES", "1"))
    n_srv = int(os.environ.get("PS_SRV_NODES", "0"))
    if rank == 0:
        return "smd0"
    if rank <= n_eb:
        return "eb"
    if rank >= size - n_srv:
        return "srv"
    return "bd"


def needs_calibration(config: StreamerConfig) -> list[str]:
    """Data sources read through ``raw.calib``/``raw.image`` (they need calibration constants)."""
    return [
        name
        for name, source in config.data_sources.items()
        if isinstance(source, Psana2DetectorInterface)
        and any(link in f.split(".") for f in source.psana_fields for link in CALIB_LINKS)
    ]


class Psana2EventSource(EventSource):
    def __init__(self, config: StreamerConfig, partition: Partition) -> None:
        from airflow_provider_lclstream.config.streamer_components import (
            Psana2EventSource as Psana2Config,
        )

        self.config = config
        self.partition = partition
        source = config.event_source
        self.options = source if isinstance(source, Psana2Config) else Psana2Config()
        self.kwargs = parse_source_identifier(config.source_identifier)
        self.psana = import_psana2()
        self.live = bool(self.kwargs.get("live"))
        self.knobs: dict[str, Any] = {}
        self.mode = self._choose_mode()
        self.role = psana_role(partition.rank, partition.size) if self.mode != "files" else "reader"
        # psana's ranks wait on each other: one failing rank must end them all (cli.py).
        self.coupled = self.mode != "files" and partition.size > 1
        if self.mode != "files":
            from airflow_provider_lclstream.streamer.sources import psana_logbook

            psana_logbook.install()
            self._apply_knobs()
        self._calibration()

    @property
    def metadata(self) -> dict[str, str]:
        return {"calibration": "skip"} if self.options.calibration == "skip" else {}

    def _choose_mode(self) -> str:
        if "files" in self.kwargs:
            if self.live:
                raise LCLStreamError("live=1 needs exp=..,run=.. (psana follows a run), not files=")
            return "files"
        directory = self.kwargs.get("dir")
        if self.live:
            if self.partition.size == 2:
                raise LCLStreamError(psana_ranks_error(2))
            return "live"
        from airflow_provider_lclstream.streamer.xtc2 import has_smalldata

        if directory and not has_smalldata(directory, self.kwargs["exp"], self.kwargs["run"]):
            self.kwargs = files_on_disk(self.kwargs)
            log.warning(
                "psana2: no smalldata for run %s in %s/smalldata: every rank reads the big-data "
                "files (files= mode)",
                self.kwargs.get("run", ""),
                directory,
            )
            return "files"
        if self.partition.size == 2:
            raise LCLStreamError(psana_ranks_error(2))
        return "smd"

    def _apply_knobs(self) -> None:
        knobs = self.options.knobs.model_dump()
        if self.live:
            knobs = {k: LIVE_DEFAULTS.get(k) if v is None else v for k, v in knobs.items()}
        for key, env in KNOB_ENV.items():
            if knobs.get(key) is not None:
                os.environ[env] = str(knobs[key])
        if knobs.get("batch_size") is not None:
            self.kwargs["batch_size"] = knobs["batch_size"]
        self.knobs = knobs

    def _calibration(self) -> None:
        calibrated = needs_calibration(self.config)
        offline = os.environ.get("LCLSTREAM_PSANA_OFFLINE") == "1" or self.mode == "files"
        if self.options.calibration == "skip":
            log.warning(
                "psana2: calibration: skip: constants are not loaded; raw.calib/raw.image use "
                "psana's defaults (marked calibration=skip in every message)"
            )
            self.kwargs.setdefault("skip_calib_load", "all")
        elif calibrated and offline:
            raise LCLStreamError(
                f"data_sources {calibrated} read raw.calib/raw.image but the calibration "
                "constants cannot be loaded ("
                + (
                    "files= has no experiment"
                    if self.mode == "files"
                    else "LCLSTREAM_PSANA_OFFLINE=1"
                )
                + "): set event_source calibration: skip (request: calibration: skip) to stream "
                "uncalibrated values, marked as such"
            )
        elif not calibrated:
            self.kwargs.setdefault("skip_calib_load", "all")  # raw data needs no constants

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

    def _open(self, kwargs: dict[str, Any]) -> Any:
        try:
            return self.psana.DataSource(**kwargs)
        except FileNotFoundError as err:
            pattern = f"{kwargs.get('exp')}-r{int(kwargs.get('run') or 0):04d}-s*"
            raise LCLStreamError(
                f"run not found: {err} (directory {kwargs.get('dir')}, files {pattern}.xtc2 and "
                f"smalldata/{pattern}.smd.xtc2)"
            ) from err
        except LCLStreamError:
            raise
        except Exception as err:
            raise self._explain(err) from err

    def _explain(self, err: Exception) -> LCLStreamError:
        """A psana failure as an error naming a corrupt dgram (file, offset) when there is one."""
        from airflow_provider_lclstream.streamer.xtc2 import CorruptDgramError, scan

        for path in self._run_files():
            try:
                scan(path)
            except CorruptDgramError as corrupt:
                return corrupt
            except OSError:
                continue
        if "requests" in type(err).__module__ or "calib" in str(err).lower():
            return LCLStreamError(
                f"psana2 could not load calibration constants ({type(err).__name__}: {err}); "
                "set calibration: skip to stream uncalibrated values, marked as such"
            )
        return LCLStreamError(f"psana2 failed: {type(err).__name__}: {err}")

    def _run_files(self) -> list[str]:
        files = self.kwargs.get("files")
        if files:
            return [files] if isinstance(files, str) else list(files)
        directory = self.kwargs.get("dir")
        if not directory:
            return []
        stem = f"{self.kwargs['exp']}-r{int(self.kwargs['run']):04d}-s*"
        return sorted(
            glob.glob(os.path.join(directory, "smalldata", stem + ".smd.xtc2*"))
            + glob.glob(os.path.join(directory, stem + ".xtc2*"))
        )

    def events(self, max_events: int | None) -> Iterator[tuple[str, RawEvent]]:
        kwargs = dict(self.kwargs)
        limit = kwargs.pop("max_events", None)
        if max_events is not None:
            limit = max_events if limit is None else min(limit, max_events)
        if self.mode != "files" and limit is not None:
            kwargs["max_events"] = limit  # psana counts the run's events, over all ranks
        ds = self._open(kwargs)
        psana_spreads = self.mode != "files" or type(ds).__name__ == "MPIDataSource"
        produced = 0
        seen = 0
        files = kwargs.get("files")
        # Reading files, psana makes one run per file; asking it for one more run than that
        # costs about a second of waiting at the end of the data: stop after the last file.
        runs_left = (1 if isinstance(files, str) else len(files)) if files else None
        try:
            for run in ds.runs():
                readers = self._readers(run)
                for evt in run.events():
                    index = seen
                    seen += 1
                    if not psana_spreads and not self.partition.owns(index):
                        continue
                    if limit is not None and produced >= limit and self.mode == "files":
                        return
                    produced += 1
                    event: RawEvent = {}
                    for name, read in readers.items():
                        try:
                            event[name] = read(evt)
                        except Exception as err:  # a detector missing from this event
                            log.debug("event %s: %s failed: %s", index, name, err)
                            event[name] = None
                    event_id = evt.timestamp if psana_spreads else index
                    yield f"run{run.runnum}/{event_id}", event
                if runs_left is not None:
                    runs_left -= 1
                    if runs_left == 0:
                        return
        except LCLStreamError:
            raise
        except Exception as err:
            raise self._explain(err) from err
        if self.live:
            self.end_error = self._check_run_ended(produced)

    def _check_run_ended(self, produced: int) -> LCLStreamError | None:
        """Live: psana stops reading when a file stops growing for ``max_retries`` seconds;
        the run is complete only if its files were renamed (EndRun written).

        Every rank gets here (psana ends the run on all of them): the error is returned, not
        raised, so that each rank's end record still carries what it delivered.
        """
        stalled = [p for p in self._run_files() if p.endswith(".inprogress")]
        if stalled:
            wait = self.knobs.get("max_retries") or os.environ.get("PS_R_MAX_RETRIES", "60")
            return LCLStreamError(
                f"live: {stalled[0]} stopped growing: gave up after {wait} s without EndRun; "
                f"this rank ({self.role}) delivered {produced} events"
            )
        return None


def psana_ranks_error(size: int) -> str:
    return (
        f"psana2's parallel mode needs 1 rank (serial) or at least 3 (smd0, an event builder, "
        f"big-data ranks); got {size}: set ranks to 1 or 3 or more"
    )
