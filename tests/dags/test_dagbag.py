"""Every DAG file in dags/ parses with no connections defined."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.mark.airflow
def test_dags_import_without_errors(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert len(bag.dags) >= len([p for p in DAGS.glob("*.py") if p.name != "__init__.py"])


@pytest.mark.airflow
def test_tasks_that_return_a_dict_push_it_as_one_xcom(airflow_db: Path) -> None:
    """A ``-> dict`` @task infers ``multiple_outputs`` and pushes every key as an XCom too: 31
    API calls for a request, about 0.25 s on the run start's critical path (#19)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    decorated = [
        (dag_id, task.task_id)
        for dag_id, dag in bag.dags.items()
        for task in dag.tasks
        if getattr(task, "multiple_outputs", False)
    ]
    assert decorated == []
    assert bag.dags["lclstream_transfer"].get_task("build_request").multiple_outputs is False


@pytest.mark.airflow
def test_the_preload_leaves_a_dag_file_s_parse_nothing_to_import(airflow_db: Path) -> None:
    """Every task parses its DAG file before it runs: in a process that ran
    ``warmup.preload()`` (as every Airflow process of a deployment with our
    ``airflow_local_settings.py`` does) that parse imports no module of its own (#19: the
    ``task`` decorator's modules took ~0.08 s of each task's parse, kafka-python for
    ``lclstream_on_run_start``'s watcher ~0.3 s)."""
    import json
    import os
    import subprocess
    import sys

    script = """
import importlib.util, json, sys
from pathlib import Path
import airflow.sdk
from airflow_provider_lclstream.warmup import preload
preload()
new = {}
for path in sorted(Path(sys.argv[1]).glob("*.py")):
    before = set(sys.modules)
    spec = importlib.util.spec_from_file_location("dag_" + path.stem, path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    new[path.name] = sorted(m for m in set(sys.modules) - before if m != "dag_" + path.stem)
print(json.dumps(new))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(DAGS)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    new = json.loads(done.stdout.strip().splitlines()[-1])
    assert "lclstream_on_run_start.py" in new and "lclstream_transfer.py" in new
    assert {name: mods for name, mods in new.items() if mods} == {}


@pytest.mark.airflow
def test_the_run_start_tops_up_the_warm_pools_after_its_trigger(airflow_db: Path) -> None:
    """Prestart (#19): ``start_transfer`` claims warm jobs and triggers the transfer without
    submitting the pools' new standby jobs (about a second each on a loaded SLURM); a task after
    it does, whatever ``start_transfer`` ended with."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS / "lclstream_on_run_start.py")).dags["lclstream_on_run_start"]
    first = dag.get_task("start_transfer")
    top_up = dag.get_task("top_up_warm_pools")
    assert first.prestart is True and first.top_up is False
    assert top_up.upstream_task_ids == {"start_transfer"}
    assert top_up.trigger_rule == "all_done"
