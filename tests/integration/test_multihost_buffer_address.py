"""The buffer's address comes from the node SLURM put it on, on the four-node cluster
(scripts/services/slurm-multi.sh): ``lclstream_transfer`` (``dag.test()``) with the buffer job
on that cluster and the streamer and consumer as local jobs in the root namespace, which reaches
the nodes only at their ``NodeAddr`` (198.18.0.11-14): nothing listens on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import h5py
import pytest

from tests.conftest import STATE_DIR
from tests.dags.dag_runner import load_dag, task_states
from tests.integration.test_multihost_slurm import read_env_file

pytestmark = [pytest.mark.multihost, pytest.mark.airflow, pytest.mark.mpi]
REST_CONN, CLI_CONN = "lcls_multi_rest", "lcls_multi_cli"


@pytest.fixture
def multi(
    slurm_multi_service: None, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    settings = read_env_file(STATE_DIR / "slurm-multi" / "env.sh")
    monkeypatch.setenv("SLURM_CONF", settings["SLURM_CONF"])  # scontrol, sbatch, the JWT
    monkeypatch.delenv("SLURM_JWT", raising=False)
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(tmp_path / "jobs"))
    defaults = {"partition": settings["LCLSTREAM_MULTI_PARTITION"]}
    rest = {
        "conn_type": "lclstream_slurm",
        "host": settings["LCLSTREAM_MULTI_SLURMRESTD_URL"],
        "login": "root",
        "extra": {"job_defaults": {**defaults, "current_working_directory": str(tmp_path)}},
    }
    cli = {"conn_type": "lclstream_slurm_cli", "extra": {"job_defaults": {**defaults}}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{REST_CONN.upper()}", json.dumps(rest))
    monkeypatch.setenv(f"AIRFLOW_CONN_{CLI_CONN.upper()}", json.dumps(cli))
    return settings


def node_of(job_id: str, env_conf: str) -> str:
    shown = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30,
        env={"SLURM_CONF": env_conf, "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    return next(w for w in shown.split() if w.startswith("NodeList=")).removeprefix("NodeList=")


@pytest.mark.parametrize(
    ("backend", "conn_id", "pin"),
    [("slurm", REST_CONN, None), ("slurm_cli", CLI_CONN, "lcls-n3")],
    ids=["slurmrestd-placed", "sbatch-pinned-n3"],
)
def test_producers_and_consumers_reach_the_buffer_at_its_nodes_address(
    multi: dict[str, str], tmp_path: Path, backend: str, conn_id: str, pin: str | None
) -> None:
    out = tmp_path / "out"
    request = {
        "synthetic": True,
        "events": 12,
        "img_per_file": 5,
        "ranks": 2,
        "consumers": 1,
        "output_dir": str(out),
        "detector_name": "epix10k2M",
        "buffer": {"backend": backend, "conn_id": conn_id},
        **({"buffer_host": pin} if pin else {}),
    }
    run = load_dag("lclstream_transfer").test(run_conf={"request": request})
    states = task_states(run)
    assert run.state == "success", states
    ti = run.get_task_instance("start_buffer")
    node = node_of(str(ti.xcom_pull(task_ids="start_buffer", key="job_id")), multi["SLURM_CONF"])
    address = ti.xcom_pull(task_ids="start_buffer", key="buffer_address")
    assert node in ("lcls-n1", "lcls-n2", "lcls-n3", "lcls-n4")
    if pin:
        assert node == pin
    assert address == f"198.18.0.1{node[-1]}", (node, address)
    assert ti.xcom_pull(task_ids="start_buffer", key="output_url").startswith(f"tcp://{address}:")
    stats = ti.xcom_pull(task_ids="watch_transfer")
    assert stats["events"] == 24 and stats["lost"] == 0 and stats["producers_ended"] == 2
    files = sorted(out.rglob("*.h5"))
    assert sum(h5py.File(f)["/data/data"].shape[0] for f in files) == 24
