"""The ``[lclstream]`` section: Airflow's configuration first, the old variables with a warning."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.hooks.settings import OPTIONS

KEYS = sorted(OPTIONS)
#: options that replace an old LCLSTREAM_* variable (newer options never had one)
OLD_KEYS = sorted(k for k, o in OPTIONS.items() if o.old_env)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No option set by the environment of the test run (conftest sets the settle time)."""
    for option in OPTIONS.values():
        monkeypatch.delenv(option.env, raising=False)
        if option.old_env:
            monkeypatch.delenv(option.old_env, raising=False)


@pytest.mark.parametrize("key", KEYS)
def test_default_without_any_setting(key: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = settings.get(key)
    assert os.path.expanduser(value) == os.path.expanduser(OPTIONS[key].default)


@pytest.mark.parametrize("key", OLD_KEYS)
def test_airflow_environment_variable_wins_over_the_old_one(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"AIRFLOW__LCLSTREAM__{key.upper()}", "7")
    old = OPTIONS[key].old_env
    assert old, f"{key} replaces an LCLSTREAM_* variable"
    monkeypatch.setenv(old, "3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert settings.get(key) == "7"


@pytest.mark.parametrize("key", OLD_KEYS)
def test_old_variable_still_works_and_names_the_new_key(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = OPTIONS[key].old_env
    assert old
    monkeypatch.setenv(old, "3")
    with pytest.warns(FutureWarning) as record:
        assert settings.get(key) == "3"
    message = str(record[0].message)
    assert old in message and f"[lclstream] {key}" in message
    assert f"AIRFLOW__LCLSTREAM__{key.upper()}" in message


def test_conf_set_in_airflow_cfg_wins_over_the_old_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.configuration import conf

    monkeypatch.setenv("LCLSTREAM_BACKEND", "psik")
    conf.set("lclstream", "backend", "slurm")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert settings.get("backend") == "slurm"
    finally:
        conf.remove_option("lclstream", "backend", remove_default=False)


def test_a_bad_number_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__TRIGGER_SETTLE_SECONDS", "ten")
    with pytest.raises(ValueError, match=r"\[lclstream\] trigger_settle_seconds.*'ten'"):
        settings.get_float("trigger_settle_seconds")


@pytest.mark.parametrize(("raw", "value"), [("True", True), ("off", False), (" 0 ", False)])
def test_a_boolean_option(monkeypatch: pytest.MonkeyPatch, raw: str, value: bool) -> None:
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__PRESTART", raw)
    assert settings.get_bool("prestart") is value


def test_a_bad_boolean_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__PRESTART", "maybe")
    with pytest.raises(ValueError, match=r"\[lclstream\] prestart must be true or false.*PRESTART"):
        settings.get_bool("prestart")


def test_empty_optional_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.get_optional("xtc_dir") is None
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__XTC_DIR", "/data/xtc")
    assert settings.get_optional("xtc_dir") == "/data/xtc"


def test_airflow_cfg_and_the_declared_defaults_reach_a_fresh_airflow(tmp_path: Path) -> None:
    """A real airflow.cfg in a new AIRFLOW_HOME; Airflow itself knows the section's defaults."""
    (tmp_path / "airflow.cfg").write_text("[lclstream]\njobs_dir = /data/lclstream-jobs\n")
    env = {
        k: v
        for k, v in os.environ.items()
        # unit-test mode reads Airflow's test config instead of airflow.cfg
        if not k.startswith(("AIRFLOW__", "LCLSTREAM_")) and k != "AIRFLOW_CONFIG"
    }
    env["AIRFLOW_HOME"] = str(tmp_path)
    code = (
        "from airflow_provider_lclstream.hooks import settings\n"
        "from airflow.configuration import conf\n"
        "conf.load_providers_configuration()\n"
        "values = [settings.get('jobs_dir'), conf.get('lclstream', 'trigger_settle_seconds'),\n"
        "          conf.get('lclstream', 'kafka_bootstrap')]\n"
        "print('VALUES', *values)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("VALUES ")]
    assert line.split()[1:] == ["/data/lclstream-jobs", "10", "127.0.0.1:9092"]


def test_local_hook_uses_jobs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_lclstream.hooks.job_backend import JobBackendHook

    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(tmp_path / "jobs"))
    assert JobBackendHook(None).get_conn().root == tmp_path / "jobs"  # type: ignore[attr-defined]


def test_job_environment_lists_what_jobs_are_given() -> None:
    """The variables passed into jobs are documented as job-side, never as options."""
    from airflow_provider_lclstream.transfer.jobs import PASSED_ENVIRONMENT

    assert set(PASSED_ENVIRONMENT) <= set(settings.JOB_ENVIRONMENT)
    old_names = {o.old_env for o in OPTIONS.values()}
    assert old_names.isdisjoint(settings.JOB_ENVIRONMENT)
