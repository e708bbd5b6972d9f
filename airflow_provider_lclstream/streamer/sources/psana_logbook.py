"""The one adapter between psana2 and the LCLS logbook: a configurable URL, and no crash offline.

For ``exp=..,run=..`` psana2 asks the logbook for the run's file list
(``DataSourceBase._get_file_info_from_db``, from the URL that ``_file_info_url`` builds, with
``pswww.slac.stanford.edu`` written into it). Two things go wrong away from SLAC:

- the URL cannot be changed (a test logbook, a facility mirror);
- ``requests.get(url)`` is called outside psana's own ``try``: with no network, ``DataSource``
  raises ``ConnectionError`` instead of scanning ``dir``, as psana does when the logbook answers
  with no files.

:func:`install` replaces exactly these two methods of ``psana.psexp.ds_base.DataSourceBase``:

- ``_file_info_url`` returns ``{base}/lgbk/{exp}/ws/{run}/current_files_for_live_mode`` with
  ``base`` from ``LCLSTREAM_LOGBOOK_URL`` (default :data:`DEFAULT_LOGBOOK_URL`);
- ``_get_file_info_from_db`` calls psana's own method and turns a failed request into "the
  logbook lists no files". A non-live run then scans ``dir`` (psana's own fallback), and the
  streamer says so once. Offline (``LCLSTREAM_PSANA_OFFLINE=1``) the logbook is not asked at all.

One more method is replaced for live mode, ``SmdReaderManager.check_transfer_complete``: psana
ends a live run as soon as its files are renamed (the DAQ's "run complete"), even when the read
it has just made brought new dgrams; those events (up to a whole chunk) were dropped. The
replacement says "complete" only when the files are final *and* the last read brought nothing,
so psana reads on to EndRun (docs/live.md).

Live readers must also survive the DAQ's rename: psana decides a file's name (``.inprogress`` or
final) once, on smd0, and opens it later by that name on every rank (smd0's smalldata, every
rank's big data in ``DgramManager``). When the run ends in between, the ``.inprogress`` name is
gone and ``DataSource`` raised ``FileNotFoundError`` ("run not found") on a loaded machine. The
modules in :data:`PSANA_OPENERS` get an ``os`` whose ``open`` falls back to the final name (the
same file, renamed), or from a final name not there yet to the ``.inprogress`` one:
:func:`open_run_file`.

Live latency: when smd0 has caught up with the writer, psana's ``SmdReaderManager.build_batch``
(and, before the run's first dgrams, ``get_next_dgrams``) sleeps a fixed ``time.sleep(1)`` before
it reads again, which at 120 Hz sets the floor of the latency. ``smdreader_manager`` gets a
``time`` whose ``sleep`` (:class:`_LivePollTime`), during those two methods only, looks at the
run's smalldata files every ``live_poll_s`` seconds (``LCLSTREAM_PSANA_LIVE_POLL_S``, default
:data:`DEFAULT_LIVE_POLL_S`) and returns as soon as one grew or was renamed, else after psana's
full second; after a read that brought data (psana sleeps before it builds what it read) it
waits one ``live_poll_s``. A retry without new data still takes 1 s, so ``max_retries``
(``PS_R_MAX_RETRIES``) keeps meaning "seconds without new data".

In live mode psana needs the logbook's list (it does not scan ``dir`` for streams): there an
unreachable logbook ends in psana's own "Timed out waiting for stable logbook file list" error,
which names the URL.

:func:`check_psana_internals` fails when psana's code no longer has what this adapter replaces;
``tests/unit/streamer/test_psana_logbook.py`` runs it against the installed psana.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import types
from typing import Any

from airflow_provider_lclstream.exceptions import LCLStreamError

log = logging.getLogger(__name__)

#: The LCLS logbook's web service (psana's hard-coded host), without the ``/lgbk/...`` path.
DEFAULT_LOGBOOK_URL = "https://pswww.slac.stanford.edu/ws/lgbk"
#: Job environment: the logbook base URL the streamer's psana asks for run files.
LOGBOOK_URL_ENV = "LCLSTREAM_LOGBOOK_URL"
OFFLINE_ENV = "LCLSTREAM_PSANA_OFFLINE"
#: Job environment: seconds between looks for new smalldata while psana waits in live mode.
LIVE_POLL_ENV = "LCLSTREAM_PSANA_LIVE_POLL_S"
DEFAULT_LIVE_POLL_S = 0.1
_PATCHED = "_lclstream_logbook_adapter"
#: What the adapter relies on in psana's ``DataSourceBase``: method -> text its source contains.
PSANA_INTERNALS = {
    "_file_info_url": "current_files_for_live_mode",
    "_get_file_info_from_db": "requests.get(url)",
    "_setup_run_files": "_scan_run_files_on_disk",
}
#: Live-mode internals of ``SmdReaderManager`` the adapter relies on.
SMD_INTERNALS = {"check_transfer_complete": "smd_files", "build_batch": "check_transfer_complete"}
#: psana's live wait (what :class:`_LivePollTime` shortens), in these ``SmdReaderManager`` methods.
LIVE_WAIT = "time.sleep(1)"
LIVE_WAIT_METHODS = ("build_batch", "get_next_dgrams")
#: psana modules that open run files by a name decided earlier (``os.open(name)``).
PSANA_OPENERS = (
    "psana.dgrammanager",
    "psana.psexp.ds_base",
    "psana.psexp.mpi_ds",
    "psana.psexp.serial_ds",
    "psana.psexp.event_manager",
)
INPROGRESS = ".inprogress"
_said: set[str] = set()


def open_run_file(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
    """``os.open``, for a run file psana named earlier: a ``.inprogress`` name that is gone opens
    the final name (renamed at EndRun), and a final name that is not there yet opens the
    ``.inprogress`` name (still being written: psana's ``_check_file_exist_with_retry`` keeps the
    final name when only the ``.inprogress`` file exists at its first look)."""
    try:
        return os.open(path, flags, mode, **kwargs)
    except FileNotFoundError:
        name = os.fspath(path)
        if not isinstance(name, str):
            raise
        other = name[: -len(INPROGRESS)] if name.endswith(INPROGRESS) else name + INPROGRESS
        try:
            return os.open(other, flags, mode, **kwargs)
        except FileNotFoundError:
            raise FileNotFoundError(2, "No such file or directory", name) from None


def live_poll_s() -> float:
    """``LCLSTREAM_PSANA_LIVE_POLL_S`` (seconds, > 0), else :data:`DEFAULT_LIVE_POLL_S`."""
    text = os.environ.get(LIVE_POLL_ENV)
    if not text:
        return DEFAULT_LIVE_POLL_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        raise LCLStreamError(f"{LIVE_POLL_ENV}={text!r}: expected seconds, > 0 and <= 1")
    return value


def smd_file_state(manager: Any) -> tuple[tuple[int, int], ...]:
    """(which name exists, size) of each smalldata file psana reads: ``.inprogress`` or final."""
    state = []
    for name in getattr(getattr(manager, "dsparms", None), "smd_files", None) or []:
        name = os.fspath(name)
        final = name[: -len(INPROGRESS)] if name.endswith(INPROGRESS) else name
        for which, candidate in enumerate((final + INPROGRESS, final)):
            try:
                state.append((which, os.stat(candidate).st_size))
                break
            except OSError:
                continue
        else:
            state.append((-1, -1))
    return tuple(state)


class _LivePollTime(types.ModuleType):
    """``time`` as psana's ``smdreader_manager`` sees it: only ``sleep`` differs, and only while
    a live run waits in a ``LIVE_WAIT_METHODS`` (``waiting``): after a read that brought data it
    returns after one ``live_poll_s``; otherwise once the smalldata files grew or were renamed
    (looked at every ``live_poll_s``), at the latest after the time asked."""

    def __init__(self) -> None:
        super().__init__("time", "time, with sleep() returning once a live run's smalldata grew")
        self.waiting: Any = None  # the SmdReaderManager in a LIVE_WAIT_METHODS (smd0: one thread)

    def waits_in(self, method: Any) -> Any:
        """``method`` of ``SmdReaderManager``, during which ``sleep`` watches its files."""

        def waiting(manager: Any, *args: Any, **kwargs: Any) -> Any:
            self.waiting = manager
            try:
                return method(manager, *args, **kwargs)
            finally:
                self.waiting = None

        waiting.__wrapped__ = method  # type: ignore[attr-defined]
        waiting.__name__ = method.__name__
        return waiting

    def sleep(self, seconds: float) -> None:
        import time

        manager, poll = self.waiting, live_poll_s()
        if manager is None or poll >= seconds or not getattr(manager.dsparms, "live", False):
            time.sleep(seconds)
            return
        if getattr(manager.smdr, "got", 0):  # the read just before brought data: build it
            time.sleep(poll)  # (one look's time, for a dgram the writer is still appending)
            return
        before = smd_file_state(manager)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(poll, left))
            if smd_file_state(manager) != before:
                return

    def __getattr__(self, name: str) -> Any:
        import time

        return getattr(time, name)


class _LiveOs(types.ModuleType):
    """``os`` as psana's file-opening modules see it: only ``open`` differs."""

    def __init__(self) -> None:
        super().__init__("os", "os, with open() following a .inprogress file's rename")
        self.open = open_run_file

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def logbook_url() -> str:
    return (os.environ.get(LOGBOOK_URL_ENV) or DEFAULT_LOGBOOK_URL).rstrip("/")


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV) == "1"


def say_once(key: str, message: str, *args: Any) -> None:
    """Log a warning the first time ``key`` is seen in this process."""
    if key not in _said:
        _said.add(key)
        log.warning(message, *args)


def check_psana_internals(base: Any = None, manager: Any = None) -> None:
    """Raise :class:`LCLStreamError` naming what changed when psana lacks what is patched
    (``base``: psana's ``DataSourceBase``, ``manager``: its ``SmdReaderManager``, by default)."""
    if base is None:
        from psana.psexp import ds_base

        base = ds_base.DataSourceBase
    problems = []
    for name, needle in PSANA_INTERNALS.items():
        method = getattr(base, name, None)
        original = getattr(method, "__wrapped__", method)
        if original is None:
            problems.append(f"{name} is gone")
            continue
        params = list(inspect.signature(original).parameters)
        if params[:2] != ["self", "runnum"]:
            problems.append(f"{name}{tuple(params)} no longer takes (self, runnum)")
        if needle not in inspect.getsource(original):
            problems.append(f"{name} no longer contains {needle!r}")
    if manager is None:
        from psana.psexp import smdreader_manager

        manager = smdreader_manager.SmdReaderManager
    for name, needle in SMD_INTERNALS.items():
        method = getattr(manager, name, None)
        original = getattr(method, "__wrapped__", method)
        if original is None:
            problems.append(f"SmdReaderManager.{name} is gone")
        elif needle not in inspect.getsource(original):
            problems.append(f"SmdReaderManager.{name} no longer contains {needle!r}")
    for name in LIVE_WAIT_METHODS:
        method = getattr(manager, name, None)
        original = getattr(method, "__wrapped__", method)
        if original is None:
            problems.append(f"SmdReaderManager.{name} is gone")
        elif LIVE_WAIT not in inspect.getsource(original):
            problems.append(f"SmdReaderManager.{name} no longer waits with {LIVE_WAIT}")
    module = sys.modules.get(manager.__module__)
    if not isinstance(getattr(module, "time", None), types.ModuleType):
        problems.append(f"{manager.__module__} no longer imports time")
    import importlib

    for module_name in PSANA_OPENERS:
        module = importlib.import_module(module_name)
        if not isinstance(getattr(module, "os", None), types.ModuleType):
            problems.append(f"{module_name} no longer imports os")
        elif "os.open(" not in inspect.getsource(module):
            problems.append(f"{module_name} no longer opens files with os.open(")
    if problems:
        raise LCLStreamError(
            "psana's DataSourceBase changed under airflow_provider_lclstream's logbook adapter "
            "(streamer/sources/psana_logbook.py): " + "; ".join(problems)
        )


def install() -> None:
    """Patch psana's logbook lookup (idempotent; re-reads the environment on every call)."""
    from psana.psexp import ds_base

    base = ds_base.DataSourceBase
    if getattr(base, _PATCHED, False):
        return
    check_psana_internals(base)
    original_lookup = base._get_file_info_from_db

    def _file_info_url(self: Any, runnum: int) -> str:
        return f"{logbook_url()}/lgbk/{self.exp}/ws/{runnum}/current_files_for_live_mode"

    def _get_file_info_from_db(self: Any, runnum: int) -> dict[str, Any]:
        if offline() and not self.live:
            say_once(
                "offline",
                "psana2: offline (%s=1): not asking the logbook, scanning dir=%s for run %s",
                OFFLINE_ENV,
                self.dir,
                runnum,
            )
            return {}
        try:
            info: dict[str, Any] = original_lookup(self, runnum)
        except Exception as err:  # requests' errors, raised outside psana's own try
            say_once(
                "unreachable",
                "psana2: logbook %s unreachable (%s: %s)%s",
                self._file_info_url(runnum),
                type(err).__name__,
                err,
                f"; scanning dir={self.dir} for run {runnum}"
                if not self.live
                else "; live mode needs it",
            )
            return {}
        if not info and not self.live:
            say_once(
                "empty",
                "psana2: the logbook %s lists no files; scanning dir=%s for run %s",
                self._file_info_url(runnum),
                self.dir,
                runnum,
            )
        return info

    from psana.psexp import smdreader_manager

    manager = smdreader_manager.SmdReaderManager
    original_complete = manager.check_transfer_complete

    def check_transfer_complete(self: Any) -> bool:
        # psana calls this right after a read; new bytes mean there are events to build first.
        return bool(original_complete(self)) and not getattr(self.smdr, "got", 0)

    check_transfer_complete.__wrapped__ = original_complete  # type: ignore[attr-defined]
    manager.check_transfer_complete = check_transfer_complete
    live_time = _LivePollTime()
    for name in LIVE_WAIT_METHODS:
        setattr(manager, name, live_time.waits_in(getattr(manager, name)))
    smdreader_manager.time = live_time  # type: ignore[attr-defined]
    _get_file_info_from_db.__wrapped__ = original_lookup  # type: ignore[attr-defined]
    _file_info_url.__wrapped__ = base._file_info_url  # type: ignore[attr-defined]
    base._file_info_url = _file_info_url
    base._get_file_info_from_db = _get_file_info_from_db
    import importlib

    live_os = _LiveOs()
    for module_name in PSANA_OPENERS:
        importlib.import_module(module_name).os = live_os  # type: ignore[attr-defined]
    setattr(base, _PATCHED, True)
