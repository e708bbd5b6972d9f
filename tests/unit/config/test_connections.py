"""Connection forms derive from the settings models: every setting is a form field, once."""

from __future__ import annotations

import dataclasses

import pytest

from airflow_provider_lclstream.config.connections import (
    CONNECTION_SETTINGS,
    STANDARD_FIELDS,
    ElogSettings,
    conn_fields,
    json_schema,
    ui_field_behaviour,
)


@pytest.mark.parametrize("conn_type", list(CONNECTION_SETTINGS))
def test_every_setting_is_a_form_field_exactly_once(conn_type: str) -> None:
    settings = CONNECTION_SETTINGS[conn_type]
    behaviour = ui_field_behaviour(settings)
    standard = {settings.fields[f] for f in behaviour["relabeling"]}
    extra = set(conn_fields(settings))
    assert standard.isdisjoint(extra)
    assert standard | extra == set(settings.model_fields)
    shown = set(STANDARD_FIELDS) - set(behaviour["hidden-fields"])
    assert shown == set(settings.fields)


@pytest.mark.parametrize("conn_type", list(CONNECTION_SETTINGS))
def test_every_setting_is_described(conn_type: str) -> None:
    for name, info in CONNECTION_SETTINGS[conn_type].model_fields.items():
        assert info.title and info.description, f"{conn_type}.{name}"


def test_schema_types_and_defaults() -> None:
    fields = conn_fields(CONNECTION_SETTINGS["lclstream_slurm_cli"])
    assert fields["accounting"]["schema"] == {
        "type": "string",
        "enum": ["auto", "sacct", "jobcomp", "none"],
        "default": "auto",
    }
    assert fields["ssh_conn_id"]["schema"] == {"type": ["string", "null"]}
    assert fields["job_defaults"]["schema"] == {"type": "object", "default": {}}
    slurm = conn_fields(CONNECTION_SETTINGS["lclstream_slurm"])
    assert slurm["verify"]["schema"] == {"type": ["boolean", "string"], "default": True}


def test_unknown_type_fails_clearly() -> None:
    with pytest.raises(TypeError, match="no conn-fields type"):
        json_schema(complex)


def test_elog_defaults_match_the_client() -> None:
    from airflow_provider_lclstream.arp.elog import ElogClient

    client = {f.name: f.default for f in dataclasses.fields(ElogClient)}
    for key in ElogSettings.extra_keys():
        default = ElogSettings.model_fields[key].default
        if default is not None:
            assert client[key] == default, key
