"""Warm pool logic (``transfer/warm_pool.py``) on the real local backend, with the real standby
control server (``streamer/standby.py``) in this process where a job's rank 0 would run it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from airflow_provider_lclstream.backends.local import LocalBackend
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.config.loader import parse_streamer_config
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.hooks.warm_pool import load_book
from airflow_provider_lclstream.streamer import standby
from airflow_provider_lclstream.transfer import warm_pool
from airflow_provider_lclstream.transfer.jobs import (
    render_config,
    standby_buffer_job,
    standby_consumer_job,
    standby_streamer_job,
)
from airflow_provider_lclstream.transfer.warm_pool import PoolBook, PoolSpec, PoolState, StandbyJob

CONFIG = render_config(TransferRequest(synthetic=True).to_streamer_config("tcp://127.0.0.1:1"))


def fake_standby_job(backend: LocalBackend, port: int) -> StandbyJob:
    """A running local job whose log carries a standby line for ``port`` (the control server
    there is this test's)."""
    line = standby.standby_line("127.0.0.1", port)
    job_id = backend.submit(
        JobSpec(name="standby-t", script=f"#!/bin/bash\necho '{line}'\nsleep 60\n")
    )
    deadline = time.monotonic() + 30
    while standby.parse_standby(backend.log_tail(job_id, 0)[0]) is None:
        assert time.monotonic() < deadline, "the job printed no standby line"
        time.sleep(0.05)
    return StandbyJob(job_id=job_id, submitted=time.time())


def test_pool_spec_checks_its_input() -> None:
    with pytest.raises(ValidationError, match="name"):
        PoolSpec(name="no spaces please")
    with pytest.raises(ValidationError, match="size"):
        PoolSpec(name="p", size=65)
    with pytest.raises(ValidationError, match="idle_timeout_s"):
        PoolSpec(name="p", idle_timeout_s=0)


def test_which_pools_serve_a_streamer() -> None:
    book = PoolBook(
        pools={
            "any": PoolState(spec=PoolSpec(name="any", conn_id="c", ranks=2)),
            "mfx": PoolState(spec=PoolSpec(name="mfx", conn_id="c", ranks=2, instrument="mfx")),
            "empty": PoolState(spec=PoolSpec(name="empty", conn_id="c", ranks=2, size=0)),
            "big": PoolState(spec=PoolSpec(name="big", conn_id="c", ranks=8)),
        }
    )
    names = [p.spec.name for p in book.serving("c", 2, "mpiexec", {}, "mfxl1234")]
    assert names == ["mfx", "any"]  # instrument pools first; an emptied pool serves none
    assert [p.spec.name for p in book.serving("c", 2, "mpiexec", {}, "xpptut15")] == ["any"]
    assert book.serving("c", 2, "srun", {}, "mfx1") == []
    assert book.serving("c", 2, "mpiexec", {"partition": "gpu"}, "mfx1") == []
    assert book.serving("other", 2, "mpiexec", {}, "mfx1") == []


def test_buffer_pools_serve_buffers_only_whatever_the_ranks() -> None:
    book = PoolBook(
        pools={
            "streamers": PoolState(spec=PoolSpec(name="streamers", conn_id="c", ranks=2)),
            "buffers": PoolState(spec=PoolSpec(name="buffers", conn_id="c", role="buffer")),
            "gpu": PoolState(
                spec=PoolSpec(name="gpu", conn_id="c", role="buffer", attributes={"p": "gpu"})
            ),
        }
    )
    assert [p.spec.name for p in book.serving("c", 64, "srun", {}, "mfx1", "buffer")] == ["buffers"]
    assert [p.spec.name for p in book.serving("c", 2, "mpiexec", {}, "mfx1")] == ["streamers"]
    assert book.serving("other", 2, "mpiexec", {}, "mfx1", "buffer") == []
    consumers = PoolBook(pools={"c": PoolState(spec=PoolSpec(name="c", role="consumer"))})
    assert [p.spec.name for p in consumers.serving(None, 8, "srun", {}, None, "consumer")] == ["c"]
    assert consumers.serving(None, 2, "mpiexec", {}, None, "buffer") == []
    with pytest.raises(ValidationError, match="role"):
        PoolSpec(name="p", role="inference")  # type: ignore[arg-type]


def test_standby_buffer_job_script() -> None:
    spec = standby_buffer_job("standby-b", idle_timeout_s=120, attributes={"partition": "dtn"})
    assert "lclstream-buffer --standby tcp://0.0.0.0:0 --standby-timeout 120\n" in spec.script
    assert spec.resources.process_count == 1 and spec.attributes == {"partition": "dtn"}
    assert spec.resources.duration == 24 * 60 + 2 + 1  # a fresh buffer's limit, the idle wait
    spec = standby_consumer_job("standby-c", idle_timeout_s=60, duration_min=90)
    assert "lclstream-receive --standby tcp://0.0.0.0:0 --standby-timeout 60\n" in spec.script
    assert spec.resources.duration == 90 + 1 + 1


def test_a_broken_pool_variable_is_named() -> None:
    with pytest.raises(LCLStreamError, match="lclstream_warm_pools is not a warm pool book"):
        load_book('{"pools": {"x": {"spec": {"name": "bad name"}}}}')
    assert load_book("") == PoolBook()


def test_standby_job_script(tmp_path: Path) -> None:
    spec = standby_streamer_job("standby-p", 4, idle_timeout_s=90, duration_min=30)
    assert "--standby tcp://0.0.0.0:0 --idle-timeout 90" in spec.script
    assert "-n 4" in spec.script and "streamer.tally" in spec.script
    assert spec.resources.duration == 30 + 1 + 1  # streaming, the idle wait, a minute's margin


def test_claim_hands_the_run_over_and_a_taken_job_is_dropped(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    server = standby.ControlServer("tcp://127.0.0.1:0", parse_streamer_config, {"ranks": 2})
    server.start()
    try:
        job = fake_standby_job(backend, server.port)
        state = PoolState(spec=PoolSpec(name="p"), jobs=[job])
        result = warm_pool.claim(state, backend, CONFIG, 5, "task-a")
        assert result.job_id == job.job_id and result.reason == "claimed"
        assert state.jobs == [] and state.claims == {"task-a": job.job_id}
        assert state.counters["claimed"] == 1
        assert server.wait(1) == {"config": CONFIG, "num_events": 5, "claim": "task-a"}
        # a stale record (another task's update lost): the job says it is taken, and is dropped
        state.jobs = [job]
        again = warm_pool.claim(state, backend, CONFIG, None, "task-b")
        assert again.job_id is None and "was taken" in again.reason
        assert state.jobs == [] and state.counters["dead"] == 1
        assert any("already taken by task-a" in e for e in state.events)
    finally:
        server.close()
        backend.cancel(job.job_id)


def test_a_refused_config_is_counted_and_not_a_claim(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    server = standby.ControlServer("tcp://127.0.0.1:0", parse_streamer_config, {"ranks": 1})
    server.start()
    try:
        job = fake_standby_job(backend, server.port)
        state = PoolState(spec=PoolSpec(name="p"), jobs=[job])
        result = warm_pool.claim(state, backend, "data_handlers: 7\n", None, "t")
        assert result.job_id is None and result.reason.startswith("refused: invalid configuration")
        assert state.jobs == [job] and state.counters["refused"] == 1  # still idle, still ready
    finally:
        server.close()
        backend.cancel(job.job_id)


def test_a_silent_standby_is_cancelled_and_counted_dead(tmp_path: Path) -> None:
    """A running job whose control socket does not answer (hung rank 0): dropped, cancelled."""
    backend = LocalBackend(tmp_path, kill_grace=1.0)
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing will listen there
    job = fake_standby_job(backend, port)
    state = PoolState(spec=PoolSpec(name="p", size=0), jobs=[job])
    warm_pool.maintain(state, backend, ping_timeout_s=0.3)
    assert state.jobs == [] and state.counters["dead"] == 1
    assert any("did not answer a ping" in e for e in state.events), state.events
    deadline = time.monotonic() + 30
    while not backend.state(job.job_id).is_final:
        assert time.monotonic() < deadline, "the silent job was not cancelled"
        time.sleep(0.2)


def test_an_ended_job_is_expired_and_the_pool_refilled(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    done = backend.submit(JobSpec(name="standby-done", script="#!/bin/bash\nexit 0\n"))
    deadline = time.monotonic() + 30
    while not backend.state(done).is_final:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    state = PoolState(
        spec=PoolSpec(name="p", size=1, idle_timeout_s=5),
        jobs=[StandbyJob(job_id=done, submitted=time.time())],
    )
    warm_pool.maintain(state, backend)
    try:
        assert state.counters["expired"] == 1 and state.counters["submitted"] == 1
        assert len(state.jobs) == 1 and state.jobs[0].job_id != done
        assert "--standby" in (tmp_path / state.jobs[0].job_id / "script").read_text()
    finally:
        backend.cancel(state.jobs[0].job_id)


def test_the_address_is_found_in_a_log_that_grew_past_its_tail(tmp_path: Path) -> None:
    """The standby line comes once, at start-up: a job that printed much after it (warnings,
    a chatty rank) still has its address read, from the log's head."""
    backend = LocalBackend(tmp_path)
    line = standby.standby_line("127.0.0.1", 45678)
    noise = "x" * 99
    script = (
        f"#!/bin/bash\necho '{line}'\n"
        f"for i in $(seq 1 600); do echo '{noise}'; done\necho done-printing\nsleep 60\n"
    )
    job_id = backend.submit(JobSpec(name="standby-noisy", script=script))
    try:
        deadline = time.monotonic() + 30
        while "done-printing" not in backend.log_tail(job_id, -100)[0]:
            assert time.monotonic() < deadline, "the job did not print its noise"
            time.sleep(0.05)
        assert standby.parse_standby(backend.log_tail(job_id, -16_000)[0]) is None  # not in tail
        job = StandbyJob(job_id=job_id, submitted=time.time())
        address = warm_pool.address_of(backend, job)
        assert address is not None and address.endswith(":45678"), address
    finally:
        backend.cancel(job_id)
