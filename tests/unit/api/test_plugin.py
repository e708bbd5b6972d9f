"""Airflow finds the API plugin through the package's entry point, with no plugins folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

ENTRY = "airflow_provider_lclstream.api.plugin:LCLStreamApiPlugin"


def test_entry_point_is_registered() -> None:
    assert [ep.value for ep in entry_points(group="airflow.plugins")] == [ENTRY]


def test_airflow_plugins_lists_it_without_a_plugins_folder(tmp_path: Path) -> None:
    empty = tmp_path / "plugins"
    empty.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")},
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(empty),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    env.pop("AIRFLOW_CONFIG", None)
    airflow = Path(sys.executable).parent / "airflow"
    out = subprocess.run(
        [str(airflow), "plugins", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (listing,) = [line for line in out.stdout.splitlines() if line.startswith("[")]
    plugins = {p["name"]: p for p in json.loads(listing)}
    assert "lclstream_api" in plugins, plugins
    plugin = plugins["lclstream_api"]
    assert ENTRY.split(":")[0] in plugin["source"]
    assert [app["name"] for app in plugin["fastapi_apps"]] == ["LCLStream transfer API"]
    assert {v["url_route"] for v in plugin["external_views"]} == {
        "lclstream-transfers",
        "lclstream-transfer-run",
    }


def test_the_plugins_folder_holds_no_copy_of_it() -> None:
    """A copy in the folder would register a second plugin of the same name."""
    folder = Path(__file__).resolve().parents[3] / "plugins"
    assert not list(folder.glob("*.py"))
