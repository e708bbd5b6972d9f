"""The provider registration lists only things that exist, and Airflow finds it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_lclstream.config.connections import CONNECTION_SETTINGS
from airflow_provider_lclstream.get_provider_info import get_provider_info
from airflow_provider_lclstream.hooks.settings import OPTIONS

AIRFLOW_DIR = Path(airflow.__file__).parent


def test_entry_point_is_registered() -> None:
    group = entry_points(group="apache_airflow_provider")
    targets = [ep.value for ep in group]
    assert "airflow_provider_lclstream.get_provider_info:get_provider_info" in targets


def test_every_listed_module_and_class_imports() -> None:
    info = get_provider_info()
    for kind in ("operators", "sensors", "hooks", "triggers"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for connection in info["connection-types"]:
        module, _, name = connection["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == connection["connection-type"]
    for link in info.get("extra-links", []):
        module, _, name = link.rpartition(".")
        getattr(importlib.import_module(module), name)


def test_airflow_providers_list_shows_us(airflow_db: Path) -> None:
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run(
        [str(airflow), "providers", "list", "-o", "plain"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "airflow-provider-lclstream" in result.stdout


def test_provider_info_validates_against_airflows_schemas() -> None:
    """provider_info.schema.json for the whole; provider.yaml's for the connection forms."""
    info = get_provider_info()
    schema = json.loads((AIRFLOW_DIR / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    yaml_schema = json.loads((AIRFLOW_DIR / "provider.yaml.schema.json").read_text())
    jsonschema.validate(info["connection-types"], yaml_schema["properties"]["connection-types"])
    option = schema["definitions"]["option"]
    for key, value in info["config"]["lclstream"]["options"].items():
        assert set(value) <= set(option["properties"]), key  # its additional_properties is a typo
        assert value["description"], key


def test_config_section_lists_every_option() -> None:
    options = get_provider_info()["config"]["lclstream"]["options"]
    assert set(options) == set(OPTIONS)


def test_providers_manager_shows_the_connection_forms() -> None:
    """Airflow's own ProvidersManager reads the forms, without the deprecated hook methods."""
    from airflow.exceptions import AirflowProviderDeprecationWarning
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AirflowProviderDeprecationWarning)
        widgets = manager.connection_form_widgets
        behaviours = manager.field_behaviours
    names = {
        m.connection_type: m.hook_name for m in manager.iter_connection_type_hook_ui_metadata()
    }
    for conn_type, settings in CONNECTION_SETTINGS.items():
        assert names[conn_type] == settings.hook_name
        fields = {
            w.field_name for key, w in widgets.items() if key.startswith(f"extra__{conn_type}__")
        }
        assert fields == set(settings.extra_keys()), conn_type
        behaviour = behaviours[conn_type]
        assert set(behaviour["relabeling"]) == set(settings.fields), conn_type
        assert "port" in behaviour["hidden_fields"], conn_type


@pytest.mark.parametrize("hook_module", ["job_backend", "elog"])
def test_hooks_define_no_deprecated_form_methods(hook_module: str) -> None:
    module = importlib.import_module(f"airflow_provider_lclstream.hooks.{hook_module}")
    for value in vars(module).values():
        if isinstance(value, type) and value.__module__ == module.__name__:
            assert "get_ui_field_behaviour" not in vars(value)
            assert "get_connection_form_widgets" not in vars(value)
