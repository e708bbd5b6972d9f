"""Settings of the running Airflow used by end-to-end tests and bench/latency.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def slurm_environment(state_dir: Path) -> dict[str, str]:
    """SLURM_CONF and the slurmrestd URL written by scripts/services/slurm.sh."""
    env: dict[str, str] = {}
    for line in (state_dir / "slurm" / "env.sh").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value.strip("'\"")
    return env


KAFKA_CONN_ID = "lclstream_kafka_sasl"
#: where the standalone's streamer jobs ask the (fake) logbook for a live run's files
LOGBOOK_PORT = int(os.environ.get("LCLSTREAM_TEST_LOGBOOK_PORT", "28091"))


def kafka_sasl_connection(kafka: str) -> dict[str, object]:
    """A ``lclstream_kafka`` connection to the broker's SASL_PLAINTEXT/PLAIN listener
    (scripts/services/kafka.sh: PLAINTEXT port + 2, password from ``kafka.sh sasl-password``)."""
    password = subprocess.run(
        ["bash", str(REPO / "scripts/services/kafka.sh"), "sasl-password"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    host, _, port = kafka.rpartition(":")
    return {
        "conn_type": "lclstream_kafka",
        "host": f"{host}:{int(port) + 2}",
        "login": "lclstream",
        "password": password,
        "extra": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
    }


def standalone_env(
    state_dir: Path, dags: Path, output: Path, xtc_dir: Path, kafka: str
) -> dict[str, str]:
    """Environment for scripts/services/airflow-standalone.sh: our DAGs (copied into ``dags``
    with the ARP smoke DAG), a SLURM connection, the Kafka broker (run starts read through its
    SASL listener, ``[lclstream] kafka_conn_id``), psana2 offline."""
    for path in [*(REPO / "dags").glob("*.py"), REPO / "tests/integration/arp_dags/arp_smoke.py"]:
        shutil.copy(path, dags / path.name)
    slurm = slurm_environment(state_dir)
    connection = {
        "conn_type": "lclstream_slurm",
        "host": slurm["LCLSTREAM_SLURMRESTD_URL"],
        "login": "root",
        "extra": {"job_defaults": {"partition": "debug"}},
    }
    return {
        **os.environ,
        "LCLSTREAM_SERVICES_DIR": str(state_dir),
        "LCLSTREAM_AIRFLOW_DAGS_FOLDER": str(dags),
        "SLURM_CONF": slurm["SLURM_CONF"],
        "AIRFLOW_CONN_LCLSTREAM_SLURM": json.dumps(connection),
        "AIRFLOW__LCLSTREAM__KAFKA_BOOTSTRAP": kafka,
        "AIRFLOW__LCLSTREAM__KAFKA_CONN_ID": KAFKA_CONN_ID,
        f"AIRFLOW_CONN_{KAFKA_CONN_ID.upper()}": json.dumps(kafka_sasl_connection(kafka)),
        "AIRFLOW__LCLSTREAM__EXPERIMENTS": "^xpptut15$",
        "AIRFLOW__LCLSTREAM__XTC_DIR": str(xtc_dir),
        # live-mode tests serve the run's file list here (tests/fake_elog.py, port LOGBOOK_PORT)
        "AIRFLOW__LCLSTREAM__LOGBOOK_URL": f"http://127.0.0.1:{LOGBOOK_PORT}",
        "LCLSTREAM_PSANA_OFFLINE": "1",
        "AIRFLOW__LCLSTREAM__BACKEND": "slurm",
        "AIRFLOW__LCLSTREAM__DETECTOR": "xppcspad",
        "AIRFLOW__LCLSTREAM__OUTPUT_DIR": str(output),
        "AIRFLOW__LCLSTREAM__TRIGGER_SETTLE_SECONDS": "10",
    }


def restart_component(standalone: dict[str, Any], component: str, timeout: float = 240) -> float:
    """Restart one component of the running standalone Airflow (fixture ``airflow_standalone``)
    with ``airflow-standalone.sh restart-component``, which returns once the stack is healthy
    with a heartbeat of the new process; returns the seconds it took."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO / "scripts/services/airflow-standalone.sh"), "restart-component",
         component],
        capture_output=True, text=True, timeout=timeout, env=standalone["env"],
    )  # fmt: skip
    assert done.returncode == 0, f"restart of {component} failed:\n{done.stdout}{done.stderr}"
    return time.monotonic() - started
