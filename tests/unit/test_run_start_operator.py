"""StartRunTransfersOperator: the first transfer is triggered by the task itself, the rest go
to XCom for the mapped trigger, none is dropped; no run start means skipped. With subscriptions,
one transfer per matching enabled subscription; unmatched run starts are recorded; run ids are
stable per message (a replay starts nothing twice)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException, DagRunTriggerException

from airflow_provider_lclstream.config.subscriptions import SubscriptionBook
from airflow_provider_lclstream.operators import run_start
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


@pytest.fixture(autouse=True)
def no_subscriptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick start: the subscription Variable is empty (tests may set a book)."""
    monkeypatch.setattr(run_start, "current_subscriptions", SubscriptionBook)
    monkeypatch.delenv("AIRFLOW__LCLSTREAM__EXPERIMENTS", raising=False)


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
    assert raised.value.dag_run_id.startswith("elog__xpptut15-r0014__")
    assert raised.value.skip_when_already_exists is True
    more = ctx["ti"].xcom["more"]
    assert [(m["conf"]["request"]["exp"], m["conf"]["request"]["run"]) for m in more] == [
        ("xpptut15", 15)
    ]
    assert more[0]["trigger_run_id"].startswith("elog__xpptut15-r0015__")
    assert "unmatched" not in ctx["ti"].xcom


def test_no_run_start_skips_and_leaves_nothing_for_the_mapped_trigger() -> None:
    operator = StartRunTransfersOperator(task_id="start_transfer")
    ctx = context(("xpptut15", 14), kind="run_end")
    with pytest.raises(AirflowSkipException):
        operator.execute(ctx)  # type: ignore[arg-type]
    assert ctx["ti"].xcom["more"] == []


def test_quick_start_experiments_filter_counts_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__EXPERIMENTS", "xpp.*")
    operator = StartRunTransfersOperator(task_id="start_transfer")
    ctx = context(("xpptut15", 14), ("mfxl1023", 3))
    with pytest.raises(DagRunTriggerException) as raised:
        operator.execute(ctx)  # type: ignore[arg-type]
    assert raised.value.conf["request"]["exp"] == "xpptut15"
    assert [e["experiment"] for e in ctx["ti"].xcom["unmatched"]] == ["mfxl1023"]


def book(*subs: dict[str, Any]) -> SubscriptionBook:
    stamp = "2026-01-01T00:00:00Z"
    return SubscriptionBook.model_validate(
        {
            "next_id": len(subs) + 1,
            "subscriptions": [
                {"created": stamp, "updated": stamp, "created_by": "a", "updated_by": "a", **s}
                for s in subs
            ],
        }
    )


SUBS = book(
    {"id": "sub1", "owner": "alice", "match": {"experiment": "mfxl1023"},
     "template": {"detector_name": "jungfrau4M", "consumer_template": "crystfel"}},
    {"id": "sub2", "owner": "bob", "match": {"instrument": "mfx"},
     "template": {"detector_name": "epix10k2M", "ranks": 4}},
    {"id": "sub3", "owner": "carol", "match": {"experiment": "xpptut15"}, "enabled": False,
     "template": {"detector_name": "xppcspad"}},
)  # fmt: skip


def test_one_transfer_per_matching_subscription(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_start, "current_subscriptions", lambda: SUBS)
    operator = StartRunTransfersOperator(task_id="start_transfer")
    ctx = context(("mfxl1023", 7), ("xpptut15", 14), ("cxil0001", 1))
    with pytest.raises(DagRunTriggerException) as raised:
        operator.execute(ctx)  # type: ignore[arg-type]
    first = raised.value.conf
    assert first["subscription"] == "sub1" and first["user"] == "alice"
    assert first["request"] == {
        "detector_name": "jungfrau4M", "consumer_template": "crystfel", "exp": "mfxl1023", "run": 7
    }  # fmt: skip
    assert raised.value.dag_run_id.startswith("sub1__mfxl1023-r0007__")
    [second] = ctx["ti"].xcom["more"]
    assert second["conf"]["subscription"] == "sub2" and second["conf"]["user"] == "bob"
    assert second["conf"]["request"]["detector_name"] == "epix10k2M"
    assert second["trigger_run_id"].startswith("sub2__mfxl1023-r0007__")
    # xpptut15's subscription is disabled: counted as unmatched, like cxil0001
    unmatched = ctx["ti"].xcom["unmatched"]
    assert [(e["experiment"], e["run"]) for e in unmatched] == [("xpptut15", 14), ("cxil0001", 1)]


def test_nothing_matched_skips_and_records_the_run_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_start, "current_subscriptions", lambda: SUBS)
    operator = StartRunTransfersOperator(task_id="start_transfer")
    ctx = context(("cxil0001", 1))
    with pytest.raises(AirflowSkipException, match="1 run start"):
        operator.execute(ctx)  # type: ignore[arg-type]
    assert ctx["ti"].xcom["more"] == []
    assert ctx["ti"].xcom["unmatched"][0]["experiment"] == "cxil0001"


def test_the_same_message_twice_plans_one_transfer() -> None:
    message = {"kind": "run_start", "experiment": "mfxl1023", "run": 7, "topic": "runs",
               "partition": 0, "offset": 5}  # fmt: skip
    planned, _ = run_start.plan_transfers([message, dict(message)], SUBS, {}, None, None)
    assert [p["conf"]["subscription"] for p in planned] == ["sub1", "sub2"]
    again, _ = run_start.plan_transfers([message], SUBS, {}, None, None)
    assert [p["trigger_run_id"] for p in again] == [p["trigger_run_id"] for p in planned]
    assert StartRunTransfersOperator(task_id="t").skip_when_already_exists is True


def test_a_bad_experiments_regex_names_the_option() -> None:
    event = {"kind": "run_start", "experiment": "mfxl1023", "run": 7}
    with pytest.raises(ValueError, match=r"\[lclstream\] experiments 'mfx\(' is not a regular"):
        run_start.plan_transfers([event], SubscriptionBook(), {}, None, "mfx(")


class FakeAccessor:
    """``context["inlet_events"][asset]``: the asset events after a time (the execution API)."""

    def __init__(self, extras: list[dict[str, Any]]) -> None:
        self.extras = extras
        self.asked: dict[str, Any] = {}

    def __getitem__(self, asset: Any) -> FakeAccessor:
        self.asked["asset"] = asset
        return self

    def after(self, when: str) -> FakeAccessor:
        self.asked["after"] = when
        return self

    def ascending(self, value: bool = True) -> FakeAccessor:
        return self

    def limit(self, n: int) -> list[Any]:
        return [SimpleNamespace(extra=e) for e in self.extras]


def test_run_starts_queued_after_the_dag_run_are_taken_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Airflow 3.3 leaves them to the next DAG run; a run start both take starts nothing twice
    (same run id) and is listed once."""
    from datetime import UTC, datetime

    monkeypatch.setattr(run_start, "current_subscriptions", lambda: SUBS)
    ctx = context(("mfxl1023", 7))
    first = ctx["triggering_asset_events"]["asset"][0].extra
    late = {"payload": {"kind": "run_start", "experiment": "mfxl1024", "run": 8}}
    accessor = FakeAccessor([first, late])  # the first again: "after" includes its own time
    ctx["inlet_events"] = accessor
    ctx["dag_run"] = SimpleNamespace(run_after=datetime(2026, 1, 1, tzinfo=UTC))
    operator = StartRunTransfersOperator(task_id="start_transfer", inlets=["the-asset"])
    with pytest.raises(DagRunTriggerException):
        operator.execute(ctx)  # type: ignore[arg-type]
    assert accessor.asked == {"asset": "the-asset", "after": "2026-01-01T00:00:00+00:00"}
    more = [(m["conf"]["subscription"], m["conf"]["event"]["run"]) for m in ctx["ti"].xcom["more"]]
    assert more == [("sub2", 7), ("sub2", 8)]  # sub1 for run 7 was the first; nothing twice


class PrestartTi(FakeTi):
    """A task instance that answers how many transfer DAG runs have a run id."""

    def __init__(self, existing: int = 0) -> None:
        super().__init__()
        self.existing = existing
        self.asked: list[tuple[str, list[str]]] = []

    def get_dr_count(self, dag_id: str, run_ids: list[str]) -> int:
        self.asked.append((dag_id, run_ids))
        return self.existing


@pytest.fixture
def prestarts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], str]]:
    """Calls of ``prestart_transfer`` (recorded; it claims jobs ``b1``, ``s1``, ``c1``)."""
    from airflow_provider_lclstream.operators import prestart

    calls: list[tuple[dict[str, Any], str]] = []

    def fake(conf: dict[str, Any], run_id: str, **kwargs: Any) -> dict[str, Any]:
        calls.append((conf, run_id))
        jobs = {"buffer": "b1", "streamer": "s1", "consumers": ["c1"]}
        return {**conf, "request": {**conf["request"], "buffer_ports": [1, 2, 3]}, "prestart": jobs}

    monkeypatch.setattr(prestart, "prestart_transfer", fake)
    return calls


def test_the_first_transfer_is_prestarted_before_it_is_triggered(
    prestarts: list[tuple[dict[str, Any], str]],
) -> None:
    ctx = context(("xpptut15", 14))
    ctx["ti"] = PrestartTi()
    with pytest.raises(DagRunTriggerException) as raised:
        StartRunTransfersOperator(task_id="start_transfer").execute(ctx)  # type: ignore[arg-type]
    run_id = raised.value.dag_run_id
    assert ctx["ti"].asked == [("lclstream_transfer", [run_id])]
    assert [r for _, r in prestarts] == [run_id]
    assert raised.value.conf["prestart"] == {"buffer": "b1", "streamer": "s1", "consumers": ["c1"]}
    assert raised.value.conf["request"]["buffer_ports"] == [1, 2, 3]
    assert ctx["ti"].xcom["prestart"]["buffer"] == "b1"


def test_no_prestart_for_a_transfer_that_exists_a_replayed_message(
    prestarts: list[tuple[dict[str, Any], str]],
) -> None:
    ctx = context(("xpptut15", 14))
    ctx["ti"] = PrestartTi(existing=1)
    with pytest.raises(DagRunTriggerException) as raised:
        StartRunTransfersOperator(task_id="start_transfer").execute(ctx)  # type: ignore[arg-type]
    assert prestarts == [] and "prestart" not in raised.value.conf
    assert raised.value.skip_when_already_exists is True  # the task runner skips it


def test_no_prestart_when_turned_off(
    prestarts: list[tuple[dict[str, Any], str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__PRESTART", "False")
    ctx = context(("xpptut15", 14))
    ctx["ti"] = PrestartTi()
    with pytest.raises(DagRunTriggerException) as raised:
        StartRunTransfersOperator(task_id="start_transfer").execute(ctx)  # type: ignore[arg-type]
    assert prestarts == [] and "prestart" not in raised.value.conf
    with pytest.raises(DagRunTriggerException):
        StartRunTransfersOperator(task_id="t", prestart=False).execute(context(("xpptut15", 1)))  # type: ignore[arg-type]
    assert prestarts == []


def test_a_prestart_that_fails_still_triggers_the_transfer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_lclstream.operators import prestart

    def broken(conf: dict[str, Any], run_id: str, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("the pool Variable is not readable")

    monkeypatch.setattr(prestart, "prestart_transfer", broken)
    ctx = context(("xpptut15", 14))
    ctx["ti"] = PrestartTi()
    with pytest.raises(DagRunTriggerException) as raised:
        StartRunTransfersOperator(task_id="start_transfer").execute(ctx)  # type: ignore[arg-type]
    assert "prestart" not in raised.value.conf
    assert raised.value.conf["request"]["exp"] == "xpptut15"
    assert "prestart" not in ctx["ti"].xcom
