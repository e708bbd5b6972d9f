"""Prestart (``operators/prestart.py``): which transfers can prestart, the claim ids are the job
names the transfer's tasks give their jobs, and a task adopts only what the pools' record says
the prestart claimed for it (never what a conf alone names), on its first try only. The claims
themselves, with real standby jobs: ``tests/dags/test_warm_pool.py``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_lclstream.config.consumers import ConsumerTemplates
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.operators import prestart
from airflow_provider_lclstream.operators.transfer import named
from airflow_provider_lclstream.transfer.warm_pool import PoolBook

BASE = {"synthetic": True, "events": 4, "ranks": 2, "output_dir": "/tmp/out"}


def request(**changes: Any) -> TransferRequest:
    return TransferRequest.model_validate({**BASE, **changes})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"buffers": 2, "consumers": 2}, "2 buffers"),
        ({"buffer_host": "sdfdtn003", "buffer": {"backend": "slurm"}}, "pinned to sdfdtn003"),
        ({"addr": "tcp://198.18.0.9:5000"}, "addr"),
        ({"consumer_command": "cat"}, "consumer command"),
    ],
)
def test_what_cannot_prestart_says_why(changes: dict[str, Any], reason: str) -> None:
    assert reason in (prestart.why_not(request(**changes)) or "")


def test_a_plain_transfer_can_prestart() -> None:
    assert prestart.why_not(request()) is None


def test_the_claim_id_is_the_job_name_the_task_gives_its_job() -> None:
    """Adoption hinges on it: the prestart claims under the name ``named`` computes later."""
    ti = SimpleNamespace(
        dag_id="lclstream_transfer", run_id="elog__x-r1__ab", task_id="start_buffer", map_index=None
    )
    spec = JobSpec(name="buffer-xpptut15-r0014", script="#!/bin/bash\n")
    got = named(spec, {"ti": ti})  # type: ignore[arg-type]
    assert got.name == prestart.task_job_name(
        spec.name, "lclstream_transfer", "elog__x-r1__ab", "start_buffer"
    )
    other_run = prestart.task_job_name(
        spec.name, "lclstream_transfer", "elog__x-r2", "start_buffer"
    )
    assert got.name != other_run


def test_no_buffer_pool_claims_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prestart, "load_book", PoolBook)
    monkeypatch.setattr(prestart.settings, "consumer_templates", ConsumerTemplates)

    def claim(**kwargs: Any) -> tuple[None, str]:
        raise AssertionError("nothing may be claimed without a buffer pool")

    monkeypatch.setattr(prestart, "claim_warm", claim)
    assert prestart.prestart_transfer({"request": BASE}, "r1") is None


def test_a_transfer_that_cannot_prestart_claims_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prestart.settings, "consumer_templates", ConsumerTemplates)

    def load() -> PoolBook:
        raise AssertionError("the pools are not even read")

    monkeypatch.setattr(prestart, "load_book", load)
    assert prestart.prestart_transfer({"request": {**BASE, "addr": "tcp://h:1"}}, "r1") is None


def ctx(conf: dict[str, Any] | None, try_number: int = 1) -> dict[str, Any]:
    return {"ti": SimpleNamespace(try_number=try_number), "dag_run": SimpleNamespace(conf=conf)}


RECORD = {"prestart": {"buffer": "b1", "streamer": "s1", "consumers": ["c0", None]}}


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The pools' record of claims: job name -> job id."""
    record = {"buffer-name": "b1", "streamer-name": "s1", "consumer-0": "c0", "consumer-1": "c9"}
    monkeypatch.setattr(prestart, "claimed_job", record.get)
    return record


def test_a_task_adopts_the_job_its_prestart_claimed(claims: dict[str, str]) -> None:
    assert prestart.prestarted_job(ctx(RECORD), "buffer-name", "buffer") == "b1"  # type: ignore[arg-type]
    assert prestart.prestarted_job(ctx(RECORD), "streamer-name", "streamer") == "s1"  # type: ignore[arg-type]
    assert prestart.prestarted_job(ctx(RECORD), "consumer-0", "consumer", 0) == "c0"  # type: ignore[arg-type]


def test_a_consumer_the_prestart_did_not_claim_is_not_adopted(claims: dict[str, str]) -> None:
    """Consumer 1 has a claim in the record (c9), but the prestart claimed none for it."""
    assert prestart.prestarted_job(ctx(RECORD), "consumer-1", "consumer", 1) is None  # type: ignore[arg-type]
    assert prestart.prestarted_job(ctx(RECORD), "consumer-2", "consumer", 2) is None  # type: ignore[arg-type]


def test_a_conf_cannot_make_a_task_adopt_a_job_the_record_does_not_hold(
    claims: dict[str, str],
) -> None:
    forged = {"prestart": {"buffer": "someone-elses-buffer", "streamer": "s1"}}
    assert prestart.prestarted_job(ctx(forged), "buffer-name", "buffer") is None  # type: ignore[arg-type]
    assert prestart.prestarted_job(ctx(forged), "no-claim", "streamer") is None  # type: ignore[arg-type]


def test_only_the_first_try_adopts(claims: dict[str, str]) -> None:
    """A retry cancels what its earlier try held, as it cancels an earlier try's job."""
    assert prestart.prestarted_job(ctx(RECORD, try_number=2), "buffer-name", "buffer") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("conf", [None, {}, {"prestart": "b1"}, {"prestart": {"buffer": None}}])
def test_no_prestart_in_the_conf_adopts_nothing(claims: dict[str, str], conf: Any) -> None:
    assert prestart.prestarted_job(ctx(conf), "buffer-name", "buffer") is None  # type: ignore[arg-type]
