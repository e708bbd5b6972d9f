"""A raw ``consumer_command`` in ``lclstream_transfer`` (real Airflow 3.3, ``dag.test()``, local
backend): refused with a clear error unless the triggering user is in ``[lclstream] api_admins``;
an admin's command runs as the consumer and receives the whole stream.

``dag.test()`` triggers as the user ``dag_test``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import h5py
import pytest

from tests.dags.dag_runner import load_dag, task_states

pytestmark = [pytest.mark.airflow, pytest.mark.mpi]
DAG_TEST_USER = "dag_test"


@pytest.fixture
def jobs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "jobs"
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(root))
    return root


def request(out: Path) -> dict[str, object]:
    receive = shlex.quote(str(Path(sys.executable).parent / "lclstream-receive"))
    command = (
        f'{receive} --url "$LCLSTREAM_URL" --dial --transport "$LCLSTREAM_TRANSPORT" '
        f"--expect-producers 1 --out {shlex.quote(str(out))} --prefix raw --timeout 120 --quiet"
    )
    return {
        "synthetic": True,
        "events": 6,
        "img_per_file": 3,
        "ranks": 1,
        "consumers": 1,
        "detector_name": "epix10k2M",
        "consumer_command": command,
    }


def test_non_admin_raw_consumer_command_fails_the_transfer(
    airflow_db: Path,
    jobs_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__API_ADMINS", "alice,bob")
    dag = load_dag("lclstream_transfer")
    run = dag.test(run_conf={"request": request(tmp_path / "out")})
    states = task_states(run)
    assert run.state == "failed", states
    assert states["build_request"] == "failed" and states["start_buffer"] == "upstream_failed"
    assert not jobs_dir.exists() or not any(jobs_dir.iterdir())  # nothing was submitted
    # dag.test() runs the task in this process and prints its traceback to stdout/stderr
    printed = capfd.readouterr()
    error = "is for admins only and dag_test is not one ([lclstream] api_admins)"
    assert error in printed.out + printed.err


def test_admin_raw_consumer_command_runs(
    airflow_db: Path, jobs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__API_ADMINS", f"alice,{DAG_TEST_USER}")
    dag = load_dag("lclstream_transfer")
    out = tmp_path / "out"
    run = dag.test(run_conf={"request": request(out)})
    states = task_states(run)
    assert run.state == "success", states
    stats = run.get_task_instance("watch_transfer").xcom_pull(task_ids="watch_transfer")
    assert stats["events"] == 6 and stats["lost"] == 0 and stats["ok"] is True
    files = sorted(out.glob("raw_*.h5"))
    assert len(files) == 2 and sum(h5py.File(f)["/data/data"].shape[0] for f in files) == 6
