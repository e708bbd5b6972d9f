"""The psana2 logbook adapter against the installed psana (real DataSource, serial mode)."""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_lclstream.exceptions import LCLStreamError
from tests.fake_elog import FakeElog
from tests.integration.streaming import free_port
from tests.psana_data import write_run

pytestmark = pytest.mark.psana
psana = pytest.importorskip("psana")


@pytest.fixture(autouse=True)
def _psana_leaves_no_environment() -> Iterator[None]:
    """psana's ``DataSource`` sets ``PS_R_MAX_RETRIES=0`` and ``PS_PROMETHEUS_JOBID`` in
    ``os.environ``: in this process they would reach every later test's streamer (a live-mode
    test, told to wait 0 s for its files, failed in clean-clone CI runs from it)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_installed_psana_has_what_the_adapter_replaces() -> None:
    from airflow_provider_lclstream.streamer.sources import psana_logbook

    psana_logbook.check_psana_internals()  # raises when psana's internals moved


def test_a_changed_psana_fails_the_check() -> None:
    from airflow_provider_lclstream.streamer.sources import psana_logbook

    class Renamed:
        def _file_info_url(self, runnum: int) -> str:
            return "https://elsewhere/"

        def _setup_run_files(self, runnum: int) -> None:
            self._scan_run_files_on_disk(runnum)

    with pytest.raises(LCLStreamError) as err:
        psana_logbook.check_psana_internals(Renamed)
    assert "_get_file_info_from_db is gone" in str(err.value)
    assert "_file_info_url no longer contains 'current_files_for_live_mode'" in str(err.value)


def events_of(directory: Path, run: int) -> int:
    ds = psana.DataSource(exp="xpptut15", run=run, dir=str(directory), skip_calib_load="all")
    return sum(1 for r in ds.runs() for _ in r.events())


def test_unreachable_logbook_scans_dir_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_lclstream.streamer.sources import psana_logbook

    write_run(tmp_path, "xpptut15", 31, streams=2, events=4)
    monkeypatch.setenv("LCLSTREAM_LOGBOOK_URL", f"http://127.0.0.1:{free_port()}/ws/lgbk")
    monkeypatch.delenv("LCLSTREAM_PSANA_OFFLINE", raising=False)
    monkeypatch.setattr(psana_logbook, "_said", set())
    psana_logbook.install()
    with caplog.at_level(logging.WARNING, logger=psana_logbook.__name__):
        assert events_of(tmp_path, 31) == 4
        assert events_of(tmp_path, 31) == 4
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) == 1 and f"scanning dir={tmp_path}" in said[0]


def test_the_logbook_url_is_a_setting_and_its_file_list_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FAKE Elog lists only stream 1: psana reads what the logbook says, not the scan."""
    from airflow_provider_lclstream.streamer.sources import psana_logbook

    write_run(tmp_path, "xpptut15", 32, streams=2, events=3)
    fake = FakeElog().start()
    try:
        fake.add_run_files("xpptut15", 32, ["/xpp/xpptut15/xtc/xpptut15-r0032-s001-c000.xtc2"])
        monkeypatch.setenv("LCLSTREAM_LOGBOOK_URL", fake.url + "/ws/lgbk")
        psana_logbook.install()
        ds = psana.DataSource(exp="xpptut15", run=32, dir=str(tmp_path), skip_calib_load="all")
        assert [Path(f).name for f in ds.smd_files] == ["xpptut15-r0032-s001-c000.smd.xtc2"]
        assert fake.gets == ["/ws/lgbk/lgbk/xpptut15/ws/32/current_files_for_live_mode"]
    finally:
        fake.stop()


def test_a_run_renamed_between_finding_and_opening_its_files_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live race, made certain: psana finds ``.inprogress`` names, then the DAQ renames the
    files (EndRun) before psana opens them. Real psana, real files; every event is read."""
    from psana.psexp import ds_base

    from airflow_provider_lclstream.streamer.sources import psana_logbook

    write_run(tmp_path, "xpptut15", 33, streams=2, events=5)
    finals = sorted(tmp_path.glob("*.xtc2")) + sorted(tmp_path.glob("smalldata/*.xtc2"))
    for path in finals:
        path.rename(path.with_name(path.name + ".inprogress"))
    fake = FakeElog().start()
    fake.add_run_files(
        "xpptut15", 33, [f"/xpp/xpptut15/xtc/xpptut15-r0033-s00{s}-c000.xtc2" for s in (0, 1)]
    )
    monkeypatch.setenv("LCLSTREAM_LOGBOOK_URL", fake.url)
    monkeypatch.setenv("PS_LIVE_FILE_LIST_STABLE_POLLS", "1")
    monkeypatch.setenv("PS_R_MAX_RETRIES", "2")  # live: waits for files (psana sets 0 offline)
    psana_logbook.install()
    setup_run_files = ds_base.DataSourceBase._setup_run_files
    chosen: list[str] = []

    def then_the_daq_renames(self: Any, runnum: int) -> None:
        setup_run_files(self, runnum)
        chosen.extend(list(self.smd_files) + list(self.xtc_files))
        for path in finals:  # EndRun: the final names, after psana chose the .inprogress ones
            path.with_name(path.name + ".inprogress").rename(path)

    monkeypatch.setattr(ds_base.DataSourceBase, "_setup_run_files", then_the_daq_renames)
    try:
        ds = psana.DataSource(
            exp="xpptut15", run=33, dir=str(tmp_path), live=True, skip_calib_load="all"
        )
        assert len(chosen) == 4 and all(f.endswith(".inprogress") for f in chosen), chosen
        assert sum(1 for r in ds.runs() for _ in r.events()) == 5
    finally:
        fake.stop()


def test_open_run_file_falls_back_from_a_missing_inprogress_name(tmp_path: Path) -> None:
    import os

    from airflow_provider_lclstream.streamer.sources.psana_logbook import open_run_file

    final = tmp_path / "r.xtc2"
    final.write_bytes(b"x")
    fd = open_run_file(str(final) + ".inprogress", os.O_RDONLY)
    try:
        assert os.read(fd, 1) == b"x"
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError) as missing:
        open_run_file(str(tmp_path / "missing.xtc2"), os.O_RDONLY)
    assert missing.value.filename == str(tmp_path / "missing.xtc2")  # the name asked for


def test_open_run_file_opens_the_inprogress_file_for_a_final_name_not_there_yet(
    tmp_path: Path,
) -> None:
    """psana can name a file by its final name while the DAQ still writes ``.inprogress``."""
    import os

    from airflow_provider_lclstream.streamer.sources.psana_logbook import open_run_file

    (tmp_path / "r.smd.xtc2.inprogress").write_bytes(b"y")
    fd = open_run_file(str(tmp_path / "r.smd.xtc2"), os.O_RDONLY)
    try:
        assert os.read(fd, 1) == b"y"
    finally:
        os.close(fd)


def test_a_psana_whose_live_wait_moved_fails_the_check() -> None:
    """The live-latency patch relies on ``time.sleep(1)`` in two ``SmdReaderManager`` methods
    and on the module's ``time``: a psana without them fails the check, naming what moved."""
    from psana.psexp import ds_base

    from airflow_provider_lclstream.streamer.sources import psana_logbook

    class Manager:  # checks transfers and builds batches, but waits some other way
        def check_transfer_complete(self) -> bool:
            return bool(self.dsparms.smd_files)  # type: ignore[attr-defined]

        def build_batch(self) -> None:
            self.check_transfer_complete()
            self.wait_for_data(1)  # type: ignore[attr-defined]

    Manager.__module__ = "psana.psexp.moved_smdreader_manager"  # a module without ``time``
    with pytest.raises(LCLStreamError) as err:
        psana_logbook.check_psana_internals(ds_base.DataSourceBase, Manager)
    assert "SmdReaderManager.build_batch no longer waits with time.sleep(1)" in str(err.value)
    assert "SmdReaderManager.get_next_dgrams is gone" in str(err.value)
    assert "psana.psexp.moved_smdreader_manager no longer imports time" in str(err.value)


def test_installed_adapter_shortens_psanas_live_wait() -> None:
    from psana.psexp import smdreader_manager

    from airflow_provider_lclstream.streamer.sources import psana_logbook

    psana_logbook.install()
    manager = smdreader_manager.SmdReaderManager
    for name in psana_logbook.LIVE_WAIT_METHODS:
        assert psana_logbook.LIVE_WAIT in inspect.getsource(getattr(manager, name).__wrapped__)
    assert isinstance(smdreader_manager.time, psana_logbook._LivePollTime)


class Waiting:
    """What ``_LivePollTime`` reads of psana's ``SmdReaderManager``: its run's smalldata files
    and the bytes its last read got."""

    def __init__(self, files: list[Path], got: int = 0) -> None:
        self.dsparms = types.SimpleNamespace(live=True, smd_files=[str(f) for f in files])
        self.smdr = types.SimpleNamespace(got=got)


def timed_sleep(clock: Any, seconds: float) -> float:
    started = time.monotonic()
    clock.sleep(seconds)
    return time.monotonic() - started


def test_live_wait_returns_when_the_smalldata_grows_or_is_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real files: psana's 1 s wait ends within a poll of the writer's append or its rename;
    with nothing written it lasts the whole second (so max_retries still counts seconds);
    after a read that brought data it is one poll."""
    from airflow_provider_lclstream.streamer.sources import psana_logbook

    monkeypatch.setenv(psana_logbook.LIVE_POLL_ENV, "0.05")
    growing = tmp_path / "r-s000-c000.smd.xtc2.inprogress"
    growing.write_bytes(b"x" * 10)
    clock = psana_logbook._LivePollTime()
    clock.waiting = Waiting([growing])

    def later(action: Any) -> threading.Timer:
        timer = threading.Timer(0.2, action)
        timer.start()
        return timer

    def append() -> None:  # as the writer does: one append (write_bytes would truncate first,
        with growing.open("ab") as fh:  # a change of its own that a poll can see in between)
            fh.write(b"x" * 10)

    # Bounds far from both outcomes (one poll after the change at 0.2 s, or the whole wait):
    # a loaded 2-core CI machine stalls threads for a few hundred ms.
    timer = later(append)
    assert timed_sleep(clock, 3.0) < 1.5
    timer.join()
    timer = later(lambda: growing.rename(tmp_path / "r-s000-c000.smd.xtc2"))
    assert timed_sleep(clock, 3.0) < 1.5
    timer.join()
    assert timed_sleep(clock, 1.0) >= 1.0  # nothing changes: psana's full second
    clock.waiting = Waiting([tmp_path / "r-s000-c000.smd.xtc2"], got=4096)
    assert timed_sleep(clock, 3.0) < 1.5
    clock.waiting = None  # outside build_batch / get_next_dgrams: psana's own sleep
    assert timed_sleep(clock, 0.3) >= 0.3
    monkeypatch.setenv(psana_logbook.LIVE_POLL_ENV, "0")
    with pytest.raises(LCLStreamError, match="LCLSTREAM_PSANA_LIVE_POLL_S='0'"):
        psana_logbook.live_poll_s()


def test_the_live_poll_knob_reaches_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_lclstream.config.streamer_components import PsanaKnobs
    from airflow_provider_lclstream.streamer.sources import psana2, psana_logbook

    assert psana2.KNOB_ENV["live_poll_s"] == psana_logbook.LIVE_POLL_ENV
    assert PsanaKnobs(live_poll_s=0.25).live_poll_s == 0.25
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="live_poll_s"):
            PsanaKnobs(live_poll_s=bad)
    monkeypatch.delenv(psana_logbook.LIVE_POLL_ENV, raising=False)
    assert psana_logbook.live_poll_s() == psana_logbook.DEFAULT_LIVE_POLL_S == 0.1
