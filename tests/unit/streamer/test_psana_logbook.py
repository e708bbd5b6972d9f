"""The psana2 logbook adapter against the installed psana (real DataSource, serial mode)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_lclstream.exceptions import LCLStreamError
from tests.fake_elog import FakeElog
from tests.integration.streaming import free_port
from tests.psana_data import write_run

pytestmark = pytest.mark.psana
psana = pytest.importorskip("psana")


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


def test_open_run_file_falls_back_only_from_a_missing_inprogress_name(tmp_path: Path) -> None:
    import os

    from airflow_provider_lclstream.streamer.sources.psana_logbook import open_run_file

    final = tmp_path / "r.xtc2"
    final.write_bytes(b"x")
    fd = open_run_file(str(final) + ".inprogress", os.O_RDONLY)
    try:
        assert os.read(fd, 1) == b"x"
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError):
        open_run_file(str(tmp_path / "missing.xtc2"), os.O_RDONLY)
