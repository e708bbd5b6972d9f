"""StartRunTransfersOperator: the first run start is triggered by the task itself, the rest
go to XCom for the mapped trigger, none is dropped; no run start means skipped."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException, DagRunTriggerException

from airflow_provider_lclstream.operators.run_start import StartRunTransfersOperator

PARAMS = {
    "detector_name": "xppcspad",
    "mode": "raw",
    "ranks": 2,
    "img_per_file": 10,
    "output_dir": "/tmp/out",
    "streamer_backend": "slurm",
    "buffer_backend": "slurm",
    "consumer_backend": "local",
}


class FakeTi:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def context(*runs: tuple[str, int], kind: str = "run_start") -> dict[str, Any]:
    events = [
        SimpleNamespace(extra={"payload": {"kind": kind, "experiment": exp, "run": run}})
        for exp, run in runs
    ]
    return {"params": PARAMS, "triggering_asset_events": {"asset": events}, "ti": FakeTi()}


def test_first_run_start_is_triggered_here_the_others_go_to_xcom() -> None:
    operator = StartRunTransfersOperator(task_id="start_transfer")
    ctx = context(("xpptut15", 14), ("xpptut15", 15), ("xpptut15", 14))
    with pytest.raises(DagRunTriggerException) as raised:
        operator.execute(ctx)  # type: ignore[arg-type]
    assert raised.value.trigger_dag_id == "lclstream_transfer"
    request = raised.value.conf["request"]
    assert (request["exp"], request["run"]) == ("xpptut15", 14)
    assert request["streamer"] == {"backend": "slurm"} and request["ranks"] == 2
    more = ctx["ti"].xcom["more"]
    assert [(c["request"]["exp"], c["request"]["run"]) for c in more] == [("xpptut15", 15)]


def test_no_run_start_skips_and_leaves_nothing_for_the_mapped_trigger() -> None:
    operator = StartRunTransfersOperator(task_id="start_transfer")
    ctx = context(("xpptut15", 14), kind="run_end")
    with pytest.raises(AirflowSkipException):
        operator.execute(ctx)  # type: ignore[arg-type]
    assert ctx["ti"].xcom["more"] == []
