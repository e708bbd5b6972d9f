"""The provider registration lists only things that exist, and Airflow finds it."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from airflow_provider_lclstream.get_provider_info import get_provider_info


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
