"""What each install brings: the data path without Airflow, Airflow as a range, a light demo."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def _expand(extra: str) -> set[str]:
    """Every distribution an extra pulls in, following self-references."""
    names: set[str] = set()
    for req in PROJECT["optional-dependencies"][extra]:
        own = re.fullmatch(r"airflow-provider-lclstream\[([\w,]+)\]", req)
        if own:
            for inner in own.group(1).split(","):
                names |= _expand(inner)
        else:
            names |= _names([req])
    return names


def test_base_install_is_the_data_path_without_airflow() -> None:
    base = _names(PROJECT["dependencies"])
    assert {"h5py", "pyzmq", "pynng", "numpy", "pydantic"} <= base
    assert not {n for n in base if n.startswith("apache-airflow")}
    assert "kafka-python" not in base  # only the Airflow face's Elog trigger uses it


def test_airflow_is_a_range_in_its_extra() -> None:
    airflow = [r for r in PROJECT["optional-dependencies"]["airflow"] if "apache-airflow" in r]
    assert airflow == ["apache-airflow>=3.1,<4"]
    assert "==" not in "".join(PROJECT["dependencies"])


def test_demo_extra_is_light() -> None:
    demo = _expand("demo")
    assert {"apache-airflow", "mpich", "mpi4py", "matplotlib"} <= demo
    assert not demo & {"selenium", "psana", "pytest", "mkdocs", "sfapi-client", "psik"}


def test_all_extra_has_every_feature_extra() -> None:
    features = set(PROJECT["optional-dependencies"]) - {"all", "dev", "demo"}
    for extra in features:
        assert _expand(extra) <= _expand("all"), extra


def test_license_and_changelog_ship() -> None:
    assert PROJECT["license"] == "BSD-3-Clause"
    assert "BSD 3-Clause" in (REPO / "LICENSE").read_text()
    assert "## [Unreleased]" in (REPO / "CHANGELOG.md").read_text()
    assert "Framework :: Apache Airflow :: Provider" in PROJECT["classifiers"]


def test_install_script_refuses_an_unknown_profile() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh"), "everything"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unknown profile 'everything'" in result.stderr
    helped = subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh"), "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "demo" in helped.stdout and "full" in helped.stdout
