"""docker-compose.yaml, docker/Dockerfile and .env.example, checked without a container engine.

The YAML is parsed and checked (services, healthchecks, mounts, dependencies, no literal secrets,
every ``${VAR}`` documented in ``.env.example``), then ``docker-compose config -q`` (v1) or
``docker compose config -q`` (v2) validates it when either is installed. Missing, it is skipped,
or a failure under ``LCLSTREAM_REQUIRE_SERVICES=1`` (``apt-get install docker-compose``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, service_unavailable

COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"

AIRFLOW_SERVICES = (
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
REQUIRED = ("postgres", "kafka", "airflow-init", *AIRFLOW_SERVICES, "slurm")

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?message}``; ``$$`` escapes are not references.
_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_SECRET_KEY = re.compile(
    r"PASSWORD|SECRET|TOKEN|FERNET|PRIVATE|CREDENTIAL|(^|_)KEY$|^AIRFLOW_CONN_"
)
#: A literal ``user:password@`` in a URL (a reference there is fine).
_URL_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def env_names() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def _strings(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (path, string) in a YAML tree, keys of mappings included in the path."""
    if isinstance(node, dict):
        return [item for k, v in node.items() for item in _strings(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [item for i, v in enumerate(node) for item in _strings(v, f"{path}[{i}]")]
    return [(path, node)] if isinstance(node, str) else []


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def test_required_services_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    missing = [name for name in REQUIRED if name not in services]
    assert not missing, f"docker-compose.yaml lacks services {missing}"
    no_check = [name for name, svc in services.items() if not (svc or {}).get("healthcheck")]
    assert not no_check, f"services without a healthcheck: {no_check}"
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["slurm"].get("profiles") == ["slurm"]
    assert services["slurm"]["build"]["dockerfile"] == "docker/Dockerfile"


def test_airflow_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-api-server": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }
    init_script = "\n".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init_script and "airflow users create" in init_script
    for name in ("airflow-init", *AIRFLOW_SERVICES):
        svc = services[name]
        assert svc["build"]["dockerfile"] == "docker/Dockerfile", name
        mounts = {m.split(":")[1] for m in svc["volumes"] if isinstance(m, str)}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins"} <= mounts, name
        env = _environment(svc)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert "@postgres:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        deps = svc["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        if name != "airflow-init":
            assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
            assert deps["kafka"]["condition"] == "service_healthy", name


def test_no_secrets_in_compose_file(compose: dict[str, Any]) -> None:
    problems = []
    for name, svc in compose["services"].items():
        for key, value in _environment(svc).items():
            if _SECRET_KEY.search(key):
                refs = list(_REF.finditer(value))
                whole = len(refs) == 1 and refs[0].group(0) == value
                default = refs[0].group(3) if whole and refs[0].group(2) in (":-", "-") else ""
                if not whole or default:
                    problems.append(f"{name}.environment.{key}={value!r}")
    for path, text in _strings(compose):
        for match in _URL_PASSWORD.finditer(text):
            if not _REF.fullmatch(match.group(1)):
                problems.append(f"{path}: literal password in URL {match.group(0)!r}")
    assert not problems, "secrets must come from .env as ${VAR}: " + "; ".join(problems)


def test_every_variable_is_documented(env_names: set[str]) -> None:
    used = {m.group(1) for m in _REF.finditer(COMPOSE.read_text())}
    undocumented = sorted(used - env_names)
    assert not undocumented, (
        f"variables used in docker-compose.yaml but not in .env.example: {undocumented}"
    )


def test_env_example_holds_only_placeholders() -> None:
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, sep, value = line.partition("=")
        if line.lstrip().startswith("#") or not sep:
            continue
        if _SECRET_KEY.search(name.strip()):
            assert value.strip() in ("", "CHANGE-ME"), f".env.example sets a real-looking {line!r}"


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    assert "apache/airflow:3.3.2-python3.11" in text
    airflow_stage = text[text.index("AS airflow") :]
    root, back = airflow_stage.index("USER root"), airflow_stage.index("USER airflow")
    assert root < airflow_stage.index("apt-get install") < back < airflow_stage.index("pip install")
    assert "libkrb5" in airflow_stage
    extras = re.search(r"PROVIDER_EXTRAS=(\S+)", airflow_stage)
    assert extras and {"airflow", "mpi", "psana"} <= set(extras.group(1).split(","))
    slurm_stage = text[text.index("AS slurm") : text.index("AS airflow")]
    for package in ("slurmctld", "slurmd", "slurmrestd", "munge"):
        assert package in slurm_stage


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


@pytest.mark.parametrize("profile", [None, "slurm"])
def test_compose_config_validates(profile: str | None, tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        service_unavailable("docker-compose", "neither docker-compose nor `docker compose` found")
        return
    args = [*command, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE)]
    if profile:
        args += ["--profile", profile]
    result = subprocess.run(
        [*args, "config", "-q"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)} config -q failed:\n{result.stderr}"
    assert "not set" not in result.stderr, result.stderr  # every variable has a value or default
