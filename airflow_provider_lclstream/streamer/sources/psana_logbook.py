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
same file, renamed): :func:`open_run_file`.

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
import types
from typing import Any

from airflow_provider_lclstream.exceptions import LCLStreamError

log = logging.getLogger(__name__)

#: The LCLS logbook's web service (psana's hard-coded host), without the ``/lgbk/...`` path.
DEFAULT_LOGBOOK_URL = "https://pswww.slac.stanford.edu/ws/lgbk"
#: Job environment: the logbook base URL the streamer's psana asks for run files.
LOGBOOK_URL_ENV = "LCLSTREAM_LOGBOOK_URL"
OFFLINE_ENV = "LCLSTREAM_PSANA_OFFLINE"
_PATCHED = "_lclstream_logbook_adapter"
#: What the adapter relies on in psana's ``DataSourceBase``: method -> text its source contains.
PSANA_INTERNALS = {
    "_file_info_url": "current_files_for_live_mode",
    "_get_file_info_from_db": "requests.get(url)",
    "_setup_run_files": "_scan_run_files_on_disk",
}
#: Live-mode internals of ``SmdReaderManager`` the adapter relies on.
SMD_INTERNALS = {"check_transfer_complete": "smd_files", "build_batch": "check_transfer_complete"}
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
    """``os.open``; a ``.inprogress`` name that is gone opens the final name (renamed at EndRun)."""
    try:
        return os.open(path, flags, mode, **kwargs)
    except FileNotFoundError:
        name = os.fspath(path)
        if not isinstance(name, str) or not name.endswith(INPROGRESS):
            raise
        return os.open(name[: -len(INPROGRESS)], flags, mode, **kwargs)


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


def check_psana_internals(base: Any = None) -> None:
    """Raise :class:`LCLStreamError` naming what changed when psana lacks what is patched."""
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
    from psana.psexp import smdreader_manager

    manager = smdreader_manager.SmdReaderManager
    for name, needle in SMD_INTERNALS.items():
        method = getattr(manager, name, None)
        original = getattr(method, "__wrapped__", method)
        if original is None:
            problems.append(f"SmdReaderManager.{name} is gone")
        elif needle not in inspect.getsource(original):
            problems.append(f"SmdReaderManager.{name} no longer contains {needle!r}")
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
    _get_file_info_from_db.__wrapped__ = original_lookup  # type: ignore[attr-defined]
    _file_info_url.__wrapped__ = base._file_info_url  # type: ignore[attr-defined]
    base._file_info_url = _file_info_url
    base._get_file_info_from_db = _get_file_info_from_db
    import importlib

    live_os = _LiveOs()
    for module_name in PSANA_OPENERS:
        importlib.import_module(module_name).os = live_os  # type: ignore[attr-defined]
    setattr(base, _PATCHED, True)
