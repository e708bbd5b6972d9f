"""A SLURM JWT held in the Airflow connection never shows in task logs, XCom or job files.

Real slurmrestd: the token is minted with ``scontrol token`` and put in the connection's
password; the deferrable operator submits a job with it through ``dag.test()``.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.dags.dag_runner import register
from tests.standalone import slurm_environment

pytestmark = [pytest.mark.slurm, pytest.mark.airflow]


def test_token_is_nowhere_to_be_seen(
    slurm_service: None,
    airflow_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from airflow.sdk import DAG

    from airflow_provider_lclstream.operators.submit_job import SubmitJobOperator
    from tests.conftest import STATE_DIR

    env = slurm_environment(STATE_DIR)
    monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
    minted = subprocess.run(
        ["scontrol", "token", "username=root", "lifespan=600"],
        capture_output=True, text=True, check=True,
        env={"SLURM_CONF": env["SLURM_CONF"], "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    token = minted.stdout.strip().split("=", 1)[1]
    assert len(token) > 20
    conn = {
        "conn_type": "lclstream_slurm",
        "host": env["LCLSTREAM_SLURMRESTD_URL"],
        "login": "root",
        "password": token,
        "extra": {"job_defaults": {"partition": "debug"}},
    }
    monkeypatch.setenv("AIRFLOW_CONN_LCLS_SECRET", json.dumps(conn))
    with DAG(
        f"test_secret_{uuid.uuid4().hex[:8]}",
        schedule=None,
        start_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    ) as dag:
        SubmitJobOperator(
            task_id="job",
            conn_id="lcls_secret",
            job={
                "name": "secret",
                "script": "#!/bin/bash\necho job ran\n",
                "directory": str(tmp_path),
            },
            poll_interval=0.5,
        )
    register(dag)
    run = dag.test()
    out, err = capfd.readouterr()
    assert run.state == "success", out[-3000:]
    assert "job ran" in "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert token not in out + err
    ti = run.get_task_instance("job")
    for key in ("job_id", "job_url", "return_value"):
        assert token not in str(ti.xcom_pull(task_ids="job", key=key))
    for path in [*tmp_path.rglob("*"), *(airflow_db / "logs").rglob("*")]:
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path
