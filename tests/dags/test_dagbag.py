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
