"""``lclstream`` client: Ctrl-C cancels the transfer; errors are reported, not raised."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from airflow_provider_lclstream.api import client as cli
from airflow_provider_lclstream.api.app import Principal, build_app

from .fakes import MemoryTransferStore


def factory(store: MemoryTransferStore):
    app = build_app(store, lambda: Principal("alice"))
    return lambda base_url: TestClient(app, base_url=base_url)


def test_ctrl_c_deletes_the_transfer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = MemoryTransferStore()
    config = tmp_path / "req.json"
    config.write_text('{"synthetic": true}')

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", interrupt)
    rc = cli.main(["--server", "http://api", "get", str(config)], make_client=factory(store))
    assert rc == 130
    (record,) = store.records.values()
    assert record.state == "canceled" and record.note == "canceled by alice"
    assert "canceling transfer" in capsys.readouterr().err


def test_rejected_config_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "req.yaml"
    config.write_text("exp: 'xpp; reboot'\nrun: 1\n")
    rc = cli.main(
        ["--server", "http://api", "get", str(config)], make_client=factory(MemoryTransferStore())
    )
    assert rc == 1
    assert "HTTP 422" in capsys.readouterr().err


def test_transfer_that_fails_before_ready(tmp_path: Path) -> None:
    store = MemoryTransferStore()
    config = tmp_path / "req.yaml"
    config.write_text("synthetic: true\n")
    original = store.create

    def create_then_fail(submission, user):  # type: ignore[no-untyped-def]
        record = original(submission, user)
        record.dag_run_state = "failed"
        return record

    store.create = create_then_fail  # type: ignore[method-assign]
    rc = cli.main(["--server", "http://api", "get", str(config)], make_client=factory(store))
    assert rc == 1
