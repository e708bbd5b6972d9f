"""Submissions are validated with the bad field named; states and metrics are derived purely."""

from __future__ import annotations

import pytest

from airflow_provider_lclstream.api.metrics import summarize
from airflow_provider_lclstream.api.models import (
    SubmissionError,
    TransferState,
    check_user,
    parse_submission,
)
from airflow_provider_lclstream.api.store import derive_state
from airflow_provider_lclstream.config.loader import dump_flat
from airflow_provider_lclstream.config.transfer import TransferRequest

from .fakes import SYNTHETIC


def config_doc() -> dict:
    return dump_flat(TransferRequest(**SYNTHETIC).to_streamer_config("tcp://127.0.0.1:5000"))


def test_request_and_config_bodies() -> None:
    sub = parse_submission(SYNTHETIC)
    assert sub.kind == "request" and sub.batch_size == 10 and sub.label == "synthetic"
    assert sub.conf("alice") == {"request": sub.document, "user": "alice"}
    assert parse_submission({"request": SYNTHETIC}).document == sub.document
    for body in (config_doc(), {"config": config_doc()}, {"parameters": config_doc()}):
        sub = parse_submission(body)
        assert sub.kind == "config" and sub.batch_size == 10
        assert sub.document["data_handlers"][0]["urls"] == ["tcp://127.0.0.1:5000"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"exp": "xpp; rm -rf /", "run": 1}, "exp"),
        ({**SYNTHETIC, "detector_name": "$(reboot)"}, "detector_name"),
        ({**SYNTHETIC, "output_dir": "/tmp/x`id`"}, "output_dir"),
        ({**SYNTHETIC, "streamer": {"conn_id": "a|b"}}, "streamer.conn_id"),
        ({**SYNTHETIC, "bogus": 1}, "bogus"),
    ],
)
def test_bad_request_names_the_field(body: dict, field: str) -> None:
    with pytest.raises(SubmissionError) as info:
        parse_submission(body)
    assert field in [f for f, _ in info.value.problems]
    assert info.value.kind == "request"


def test_bad_config_names_the_path() -> None:
    doc = config_doc()
    doc["data_handlers"][0]["library"] = "carrier-pigeon"
    with pytest.raises(SubmissionError) as info:
        parse_submission(doc)
    assert info.value.problems[0][0] == "data_handlers[0].library"


def test_user_names() -> None:
    assert check_user("alice.b@slac") == "alice.b@slac"
    assert check_user("Alice Tester") == "Alice Tester"  # as `certified init "Alice Tester"`
    for bad in ("", " a", "a ", "a  b", "x;y", "$(id)", "-rf", "a`id`", "a\nb"):
        with pytest.raises(SubmissionError):
            check_user(bad)


@pytest.mark.parametrize(
    ("run", "tasks", "canceled", "state"),
    [
        ("queued", {}, False, TransferState.QUEUED),
        ("running", {"start_buffer": "running"}, False, TransferState.PROVISIONING),
        ("running", {"start_buffer": "success"}, False, TransferState.READY),
        ("success", {"start_buffer": "success"}, False, TransferState.COMPLETED),
        ("failed", {"run_streamer": "failed"}, False, TransferState.FAILED),
        ("running", {"stop_jobs": None}, True, TransferState.CANCELING),
        ("failed", {"stop_jobs": "success"}, True, TransferState.CANCELED),
    ],
)
def test_derive_state(run: str, tasks: dict, canceled: bool, state: TransferState) -> None:
    assert derive_state(run, tasks, canceled=canceled) == state


def test_summarize_estimates_then_counts_events() -> None:
    stats = {
        "state": "running",
        "messages_in": 30,
        "bytes_in": 3_000_000,
        "rates": {"messages_in": 5.0, "bytes_in": 2e6},
        "producers": {"seen": 2, "ended": 1, "expected": 2, "per_producer": {}},
    }
    m = summarize(stats, batch_size=10)
    assert (m.events, m.events_per_s, m.mb_per_s, m.producers_ended) == (300, 50.0, 2.0, 1)
    stats["producers"] = {
        "seen": 2,
        "ended": 2,
        "expected": 2,
        "per_producer": {"a": {"events": 140}, "b": {"events": 150}},
    }
    assert summarize(stats, batch_size=10).events == 290
