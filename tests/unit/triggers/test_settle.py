"""The settle workaround applies only on Airflow versions that still have the race."""

from __future__ import annotations

import time

import airflow
import pytest

from airflow_provider_lclstream.triggers import settle


def test_names_the_airflow_issues() -> None:
    assert settle.AIRFLOW_ISSUES == ("apache/airflow#71580", "apache/airflow#72716")
    for issue in settle.AIRFLOW_ISSUES:
        assert issue in (settle.__doc__ or "")


def test_unfixed_airflow_settles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle, "FIXED_IN", None)
    assert settle.needs_settling()
    before = time.time()
    deadline = settle.settle_deadline(5.0)
    assert deadline is not None and before + 5.0 <= deadline <= time.time() + 5.0


def test_airflow_below_the_fixed_version_settles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle, "FIXED_IN", "99.0.0")
    assert settle.needs_settling()
    assert settle.settle_deadline(5.0) is not None


def test_fixed_airflow_does_not_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle, "FIXED_IN", airflow.__version__)
    assert not settle.needs_settling()
    assert settle.settle_deadline(5.0) is None
    assert settle.needs_settling("3.3.1")


def test_zero_seconds_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle, "FIXED_IN", None)
    assert settle.settle_deadline(0) is None


def test_default_comes_from_the_lclstream_section() -> None:
    """conftest sets AIRFLOW__LCLSTREAM__TRIGGER_SETTLE_SECONDS=0 before the import."""
    assert settle.SETTLE_S == 0.0
