"""Shared fixtures: real services behind markers, psana2 data, MPI.

With ``LCLSTREAM_REQUIRE_SERVICES=1`` (set by ``make test`` and CI) a service that cannot start
FAILS the test; without it the test is skipped with a message saying how to enable it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVICES_DIR = REPO / "scripts" / "services"
STATE_DIR = Path(os.environ.get("LCLSTREAM_SERVICES_DIR", REPO / ".services"))
REQUIRE_SERVICES = os.environ.get("LCLSTREAM_REQUIRE_SERVICES") == "1"

# Airflow reads its configuration at import time: point it at the test home before anything
# imports airflow. scripts/services/airflow.sh uses the same location.
AIRFLOW_HOME = STATE_DIR / "airflow"
os.environ.setdefault("AIRFLOW_HOME", str(AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# dag.test() runs triggers inline: no need to hold their first event back (triggers/settle.py).
os.environ.setdefault("AIRFLOW__LCLSTREAM__TRIGGER_SETTLE_SECONDS", "0")
# The project's deployments defer every wait (Airflow's own default is False); the tests run the
# same way. Operators read it as their ``deferrable`` default when their module is imported.
os.environ.setdefault("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
# A fixed key, so every process of a test session (and a re-created home) reads the same secrets.
os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", "lTpKL4byaE_NjdDMHOZ-qn2doUyI7fpxHLib6CWWggY=")


def service_unavailable(name: str, reason: str) -> None:
    """Fail (CI, ``make test``) or skip (a laptop) a test whose service is missing."""
    message = f"service {name!r} unavailable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (LCLSTREAM_REQUIRE_SERVICES=1: a missing service is a failure)")
    pytest.skip(message + f"; run `scripts/services/{name}.sh start` or `make services-up`")


def run_service_script(name: str, action: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SERVICES_DIR / f"{name}.sh"), action],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "LCLSTREAM_SERVICES_DIR": str(STATE_DIR)},
    )


def ensure_service(name: str) -> None:
    """Start a service with its script (idempotent) or fail/skip with the script's output."""
    if run_service_script(name, "status", timeout=60).returncode == 0:
        return
    started = run_service_script(name, "start")
    if started.returncode != 0:
        service_unavailable(name, (started.stdout + started.stderr).strip()[-2000:])


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow 3.3 metadata database (SQLite) in the test AIRFLOW_HOME."""
    ensure_service("airflow")
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def slurm_service() -> None:
    """The single-node SLURM cluster with slurmrestd on 127.0.0.1."""
    ensure_service("slurm")


@pytest.fixture(scope="session")
def slurm_multi_service() -> None:
    """The four-node SLURM, one network namespace per node (scripts/services/slurm-multi.sh)."""
    ensure_service("slurm-multi")


@pytest.fixture(scope="session")
def kafka_service() -> str:
    """The Apache Kafka KRaft broker; returns its bootstrap address."""
    ensure_service("kafka")
    return os.environ.get("LCLSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


def venv_bin(tool: str) -> str | None:
    """Find a console tool next to this interpreter first, then on PATH."""
    candidate = Path(sys.executable).parent / tool
    if candidate.exists():
        return str(candidate)
    return shutil.which(tool)


@pytest.fixture(scope="session")
def mpiexec() -> str:
    """Path of ``mpiexec`` from the mpich wheel."""
    path = venv_bin("mpiexec")
    if path is None:
        service_unavailable(
            "mpi", "mpiexec not found: pip install 'airflow-provider-lclstream[mpi]'"
        )
    assert path is not None
    return path


@pytest.fixture(scope="session")
def xtc2_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small xtc2 file written by psana's ``xtcwriter`` (10 events)."""
    from tests.psana_data import write_xtc2

    try:
        return write_xtc2(tmp_path_factory.mktemp("xtc2") / "data.xtc2", events=10)
    except RuntimeError as err:
        service_unavailable("psana", str(err))
        raise


@pytest.fixture(scope="session")
def xtc2_run_dir(tmp_path_factory: pytest.TempPathFactory, xtc2_file: Path) -> Path:
    """A psana ``dir=`` holding the xtcwriter file as run 14 of xpptut15 (its own metadata)."""
    directory = tmp_path_factory.mktemp("xtc")
    shutil.copy(xtc2_file, directory / "xpptut15-r0014-s000-c000.xtc2")
    return directory


@pytest.fixture(scope="session")
def airflow_standalone(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_service: str,
    slurm_service: None,
    xtc2_run_dir: Path,
) -> Iterator[dict[str, Any]]:
    """A running Airflow 3.3 (api-server, scheduler, dag-processor, triggerer) with our DAGs,
    a SLURM connection, the Kafka broker and psana2 data offline; yields its settings.

    (Re)starts scripts/services/airflow-standalone.sh with a DAGs folder holding dags/ and the
    ARP smoke DAG, and stops it at the end of the session.
    """
    from tests.standalone import slurm_environment, standalone_env

    output = tmp_path_factory.mktemp("transfers")
    dags = tmp_path_factory.mktemp("standalone_dags")
    env = standalone_env(STATE_DIR, dags, output, xtc2_run_dir, kafka_service)
    slurm = slurm_environment(STATE_DIR)
    script = SERVICES_DIR / "airflow-standalone.sh"
    try:
        started = subprocess.run(
            ["bash", str(script), "start"], capture_output=True, text=True, timeout=300, env=env
        )
    except subprocess.TimeoutExpired as err:
        subprocess.run(["bash", str(script), "stop"], env=env, timeout=120)
        service_unavailable("airflow-standalone", f"start timed out: {err}")
        raise
    if started.returncode != 0:
        service_unavailable("airflow-standalone", (started.stdout + started.stderr)[-3000:])
    port = os.environ.get("LCLSTREAM_AIRFLOW_PORT", "28080")
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "user": "admin",
            "password": os.environ.get("LCLSTREAM_AIRFLOW_PASSWORD", "admin"),
            "output": output,
            "kafka": kafka_service,
            "slurm": slurm,
            "env": env,  # for restart_component (tests/standalone.py)
        }
    finally:
        subprocess.run(["bash", str(script), "stop"], env=env, timeout=120)
