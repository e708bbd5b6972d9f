"""Parsing and filtering of Elog Kafka messages (no broker)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_lclstream.triggers.elog_messages import (
    EVENT_KINDS,
    ElogEventFilter,
    MalformedElogMessage,
    parse_elog_message,
)


def envelope(crud: str = "Create", experiment: str = "mfxl1023", **value: Any) -> bytes:
    return json.dumps({"experiment_name": experiment, "CRUD": crud, "value": value}).encode()


def test_run_start() -> None:
    raw = envelope(num=12, begin_time="2025-01-02T03:04:05Z", type="DATA", params={"det": "jf"})
    assert parse_elog_message("runs", raw) == {
        "kind": "run_start",
        "experiment": "mfxl1023",
        "run": 12,
        "time": "2025-01-02T03:04:05Z",
        "run_type": "DATA",
        "params": {"det": "jf"},
    }


def test_run_start_defaults_and_record_time() -> None:
    event = parse_elog_message("runs", envelope(num="7"), timestamp_ms=0)
    assert event is not None
    assert (event["run"], event["run_type"], event["params"]) == (7, None, {})
    assert event["time"] == "1970-01-01T00:00:00+00:00"


def test_run_end_needs_end_time() -> None:
    ended = parse_elog_message("runs", envelope("Update", num=12, end_time=1.5, type="DATA"))
    assert ended == {
        "kind": "run_end",
        "experiment": "mfxl1023",
        "run": 12,
        "time": "1970-01-01T00:00:01.500000+00:00",
        "run_type": "DATA",
    }
    assert parse_elog_message("runs", envelope("Update", num=12, end_time=None)) is None


def test_file_registered() -> None:
    raw = envelope(path="/sdf/data/lcls/mfx/r0012.xtc2", run_num=12)
    assert parse_elog_message("file_catalog", raw, timestamp_ms=1_000) == {
        "kind": "file_registered",
        "experiment": "mfxl1023",
        "run": 12,
        "time": "1970-01-01T00:00:01+00:00",
        "path": "/sdf/data/lcls/mfx/r0012.xtc2",
    }


@pytest.mark.parametrize(
    ("topic", "raw"),
    [
        ("runs", envelope("Delete", num=1)),
        ("file_catalog", envelope("Update", path="/x", run_num=1)),
        ("file_catalog", envelope("Delete")),
        ("shifts", b"not even json"),
    ],
)
def test_not_an_event(topic: str, raw: bytes) -> None:
    assert parse_elog_message(topic, raw) is None


def test_custom_topic_names() -> None:
    raw = envelope(num=3)
    assert parse_elog_message("runs", raw, runs_topic="elog.runs") is None
    event = parse_elog_message("elog.runs", raw, runs_topic="elog.runs")
    assert event is not None and event["run"] == 3


@pytest.mark.parametrize(
    ("topic", "raw", "field"),
    [
        ("runs", b"{not json", "not JSON"),
        ("runs", b"\xff\xfe", "not JSON"),
        ("runs", b"[1, 2]", "envelope"),
        ("runs", json.dumps({"CRUD": "Create", "value": {"num": 1}}).encode(), "experiment_name"),
        ("runs", envelope("Upsert", num=1), "CRUD"),
        ("runs", json.dumps({"experiment_name": "x", "CRUD": "Create"}).encode(), "value"),
        ("runs", envelope(num=-1), "value.num"),
        ("runs", envelope(num=True), "value.num"),
        ("runs", envelope(), "value.num"),
        ("runs", envelope(num=1, type=5), "value.type"),
        ("runs", envelope(num=1, params=[1]), "value.params"),
        ("runs", envelope(num=1, begin_time=[2025]), "value.begin_time"),
        ("runs", envelope("Update", num=1, end_time=1e300), "value.end_time"),
        ("file_catalog", envelope(run_num=1), "value.path"),
        ("file_catalog", envelope(path="/x", run_num="twelve"), "value.run_num"),
    ],
)
def test_malformed(topic: str, raw: bytes, field: str) -> None:
    with pytest.raises(MalformedElogMessage, match=field):
        parse_elog_message(topic, raw)


def test_accepts_decoded_mapping() -> None:
    event = parse_elog_message(
        "runs", {"experiment_name": "x", "CRUD": "Create", "value": {"num": 1}}
    )
    assert event is not None and event["experiment"] == "x"


def _event(kind: str = "run_start", experiment: str = "mfxl1023", **extra: Any) -> Any:
    return {"kind": kind, "experiment": experiment, "run": 1, "time": None, **extra}


def test_filter_defaults_match_everything() -> None:
    flt = ElogEventFilter.build()
    assert flt.kinds == frozenset(EVENT_KINDS)
    assert all(flt.matches(_event(kind)) for kind in EVENT_KINDS)


def test_filter_experiment_pattern_is_a_full_match() -> None:
    flt = ElogEventFilter.build(experiment_pattern="mfx.*")
    assert flt.matches(_event(experiment="mfxl1023"))
    assert not flt.matches(_event(experiment="xppmfx01"))


def test_filter_kinds_and_run_types() -> None:
    flt = ElogEventFilter.build(run_types=["DATA"], kinds=["run_start", "file_registered"])
    assert flt.matches(_event(run_type="DATA"))
    assert not flt.matches(_event(run_type="DARK"))
    assert not flt.matches(_event("run_end", run_type="DATA"))
    # File registrations carry no run type and pass the run-type filter.
    assert flt.matches(_event("file_registered", path="/x"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kinds": ["run_begin"]}, "kinds"),
        ({"kinds": []}, "kinds"),
        ({"experiment_pattern": "mfx("}, "experiment_pattern"),
    ],
)
def test_filter_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ElogEventFilter.build(**kwargs)
