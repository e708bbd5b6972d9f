"""Warm pools: standby streamer, buffer and consumer jobs kept ready (issue #19).

A pool (:class:`PoolSpec`) keeps ``size`` standby jobs of one ``role`` on one job backend
connection: streamers (``transfer/jobs.py``: ``standby_streamer_job``, for ``ranks`` ranks),
buffers (``standby_buffer_job``) or consumers (``standby_consumer_job``). A transfer's
``run_streamer`` claims a streamer, its ``start_buffer`` a buffer and its ``start_consumers``
consumers (:func:`claim`): it hands the job its run (a streamer config; a buffer's or a
receiver's arguments) over the job's control socket (``transports/control.py``) and then
watches that job as if it had submitted it.
The claim is atomic on the job (a standby accepts one run), so the pool's record may be stale
without two transfers ever sharing a job. With no live standby job the transfer submits a fresh
one, as without a pool, and the pool counts the fallback.

:func:`maintain` is the health check: it drops jobs that ended (``expired``: exit 0 after their
idle timeout) or that do not answer a ping while running (``dead``: cancelled), then submits
jobs up to ``size``. Every drop and fallback is counted and kept in the pool's recent events,
which the transfers API and page show.

This module is plain Python over a job backend; the Airflow Variable that holds the pools is
``hooks/warm_pool.py``'s.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from airflow_provider_lclstream.backends.base import JobBackendError
from airflow_provider_lclstream.transfer.jobs import (
    standby_buffer_job,
    standby_consumer_job,
    standby_streamer_job,
)
from airflow_provider_lclstream.transports import control as standby

if TYPE_CHECKING:
    from airflow_provider_lclstream.backends.base import JobBackend

EVENTS_KEPT = 30
"""Recent events kept per pool (drops, fallbacks, claims), newest last."""
CLAIMS_KEPT = 200
"""Claims remembered per pool (the claiming task's job name → job id), for a retried task."""
START_GRACE_S = 120.0
"""A submitted standby job that printed no control address within this time is dropped as dead."""
CLAIM_TIMEOUT_S = 5.0
"""How long a claim waits for the standby's answer. A standby that does not answer in time is
cancelled (it could take the run late, next to the fresh job the transfer then submits), so this
is longer than a ping's timeout: only a hung standby costs it."""
COUNTERS = ("submitted", "claimed", "fallbacks", "dead", "expired", "refused")


Role = Literal["streamer", "buffer", "consumer"]
PROGRAMS: dict[str, str] = {
    "streamer": "lclstreamer",
    "buffer": "lclstream-buffer",
    "consumer": "lclstream-receive",
}
"""The program of each role: its standby line names it (``transports/control.py``)."""


class PoolSpec(BaseModel):
    """What a pool keeps ready. A streamer pool serves a transfer whose streamer runs on
    ``conn_id`` (None: the local backend) with ``ranks`` ranks, ``launcher``, the same job
    ``attributes`` and, when ``instrument`` is set, an experiment of that instrument (its name's
    prefix, e.g. ``mfx``). A buffer pool (``role: buffer``) serves a transfer with one buffer,
    not pinned to a node, on ``conn_id`` with the same ``attributes`` and instrument (``ranks``
    and ``launcher`` do not apply); a consumer pool (``role: consumer``) serves each
    ``lclstream-receive`` consumer (no consumer command) of a transfer the same way."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    role: Role = Field(
        default="streamer", description="what the pool keeps: streamer, buffer or consumer"
    )
    conn_id: str | None = None
    ranks: int = Field(default=2, ge=1, le=4096)
    launcher: Literal["mpiexec", "srun"] = "mpiexec"
    size: int = Field(default=1, ge=0, le=64, description="standby jobs kept ready")
    idle_timeout_s: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    instrument: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    duration_min: int = Field(default=60, ge=1, description="streaming time after a claim")

    def serves(
        self,
        conn_id: str | None,
        ranks: int,
        launcher: str,
        attributes: dict[str, str],
        exp: str | None,
        role: Role = "streamer",
    ) -> bool:
        instrument_ok = self.instrument is None or (exp or "").startswith(self.instrument)
        shape_ok = role != "streamer" or (self.ranks == ranks and self.launcher == launcher)
        return (
            self.role == role
            and self.conn_id == conn_id
            and shape_ok
            and self.attributes == attributes
            and instrument_ok
        )


class StandbyJob(BaseModel):
    job_id: str
    submitted: float
    address: str | None = None
    role: Role = "streamer"


class PoolState(BaseModel):
    """A pool: its spec, its standby jobs, its counters, recent events and claims."""

    spec: PoolSpec
    jobs: list[StandbyJob] = Field(default_factory=list)
    counters: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    events: list[str] = Field(default_factory=list)
    claims: dict[str, str] = Field(default_factory=dict)
    checked: float | None = None

    def count(self, counter: str, event: str | None = None) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + 1
        if event:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.events = [*self.events, f"{stamp} {event}"][-EVENTS_KEPT:]

    def remember_claim(self, name: str, job_id: str) -> None:
        claims = {**self.claims, name: job_id}
        self.claims = dict(list(claims.items())[-CLAIMS_KEPT:])


class PoolBook(BaseModel):
    """Every pool, by name (the JSON of the Airflow Variable ``lclstream_warm_pools``)."""

    pools: dict[str, PoolState] = Field(default_factory=dict)

    def serving(
        self,
        conn_id: str | None,
        ranks: int,
        launcher: str,
        attributes: dict[str, str],
        exp: str | None,
        role: Role = "streamer",
    ) -> list[PoolState]:
        """The pools that may serve this streamer (or buffer: ``role``); an emptied pool, size
        0, serves none; instrument pools first."""
        found = [
            p
            for p in self.pools.values()
            if p.spec.size > 0 and p.spec.serves(conn_id, ranks, launcher, attributes, exp, role)
        ]
        return sorted(found, key=lambda p: p.spec.instrument is None)

    def claimed_job(self, name: str) -> str | None:
        """The standby job an earlier try of task job ``name`` claimed, if any."""
        for pool in self.pools.values():
            if name in pool.claims:
                return pool.claims[name]
        return None


LOG_HEAD_BYTES = 65_536
LOG_TAIL_BYTES = 16_000


def address_of(backend: JobBackend, job: StandbyJob) -> str | None:
    """``tcp://HOST:PORT`` of a standby job's control socket: the port from its log's standby
    line, the host from the backend's node list (rank 0 runs on the first node), else the host
    the job printed; None while it has printed none."""
    if job.address:
        return job.address
    found = None
    # The line comes once, at start-up: look at the log's head, then (a job that printed much
    # before it) at its tail.
    for offset, size in ((0, LOG_HEAD_BYTES), (-LOG_TAIL_BYTES, LOG_TAIL_BYTES)):
        try:
            text, _ = backend.log_tail(job.job_id, offset, size)
        except JobBackendError:
            return None
        found = standby.parse_standby(text or "", PROGRAMS[job.role])
        if found is not None:
            break
    if found is None:
        return None
    host, port = found
    try:
        nodes: list[str] = list(backend.state(job.job_id).nodes)
    except JobBackendError:
        nodes = []
    job.address = f"tcp://{nodes[0] if nodes else host}:{port}"
    return job.address


def submit(state: PoolState, backend: JobBackend, logbook_url: str | None = None) -> str:
    """Submit one standby job for the pool and record it."""
    spec = state.spec
    if spec.role == "consumer":
        job = standby_consumer_job(
            f"standby-{spec.name}",
            idle_timeout_s=spec.idle_timeout_s,
            duration_min=spec.duration_min,
            attributes=spec.attributes,
        )
    elif spec.role == "buffer":
        job = standby_buffer_job(
            f"standby-{spec.name}",
            idle_timeout_s=spec.idle_timeout_s,
            duration_min=spec.duration_min,
            attributes=spec.attributes,
        )
    else:
        job = standby_streamer_job(
            f"standby-{spec.name}",
            spec.ranks,
            launcher=spec.launcher,
            idle_timeout_s=spec.idle_timeout_s,
            duration_min=spec.duration_min,
            attributes=spec.attributes,
            logbook_url=logbook_url,
        )
    job_id = backend.submit(job)
    record = StandbyJob(job_id=job_id, submitted=time.time(), role=spec.role)
    state.jobs = [*state.jobs, record]
    state.count("submitted")
    return job_id


def _drop(state: PoolState, job: StandbyJob, counter: str, why: str) -> None:
    state.jobs = [j for j in state.jobs if j.job_id != job.job_id]
    state.count(counter, f"{counter}: standby job {job.job_id} {why}")


def _cancel_quietly(backend: JobBackend, job_id: str) -> None:
    with contextlib.suppress(JobBackendError):
        backend.cancel(job_id)


def check(
    state: PoolState, backend: JobBackend, job: StandbyJob, timeout_s: float, now: float
) -> bool:
    """Whether ``job`` is alive: ended jobs are dropped (``expired`` after a clean exit, else
    ``dead``); a running one that does not answer a ping is cancelled and dropped (``dead``);
    one still starting is kept for :data:`START_GRACE_S`."""
    try:
        status = backend.state(job.job_id)
    except JobBackendError as err:
        _drop(state, job, "dead", f"unknown to its backend: {err}")
        return False
    if status.is_final:
        clean = status.state.is_success
        _drop(state, job, "expired" if clean else "dead", f"ended {status.state.value}")
        return False
    address = address_of(backend, job)
    if address is None:
        if now - job.submitted > START_GRACE_S:
            _cancel_quietly(backend, job.job_id)
            _drop(state, job, "dead", f"printed no control address in {START_GRACE_S:g} s")
            return False
        return True  # pending or starting
    try:
        answer = standby.ping(address, timeout_s)
    except standby.StandbyUnreachable:
        _cancel_quietly(backend, job.job_id)
        _drop(state, job, "dead", f"did not answer a ping at {address} within {timeout_s} s")
        return False
    if answer.get("state") in ("expired", "stopping"):  # ending unused: its idle timeout
        _drop(state, job, "expired", f"is {answer.get('state')}")
        return False
    if answer.get("state") != "idle":
        _drop(state, job, "dead", f"is {answer.get('state')} (claimed by another), not idle")
        return False
    return True


def maintain(
    state: PoolState,
    backend: JobBackend,
    *,
    ping_timeout_s: float = standby.DEFAULT_TIMEOUT_S,
    logbook_url: str | None = None,
) -> PoolState:
    """The health check: drop ended and silent jobs, then submit up to ``size``."""
    now = time.time()
    for job in list(state.jobs):
        check(state, backend, job, ping_timeout_s, now)
    while len(state.jobs) < state.spec.size:
        submit(state, backend, logbook_url)
    extra = state.jobs[state.spec.size :]  # the pool shrank: stop the newest extra jobs
    for job in extra:
        _cancel_quietly(backend, job.job_id)
        _drop(state, job, "expired", "stopped: the pool shrank")
    state.checked = now
    return state


class ClaimResult(BaseModel):
    job_id: str | None = None
    pool: str | None = None
    reason: str = ""


def claim(
    state: PoolState,
    backend: JobBackend,
    config_text: str,
    num_events: int | None,
    claim_id: str,
    *,
    timeout_s: float = CLAIM_TIMEOUT_S,
) -> ClaimResult:
    """Hand the run to the oldest live standby job of the pool; a job id on success (the job is
    then out of the pool and remembered under ``claim_id``). A job that does not answer within
    ``timeout_s`` is cancelled and dropped as dead, one taken by another claim is dropped, and
    the next is tried. No job
    (none ready, or the standby refused the config): ``job_id`` None and the reason; the caller
    submits a fresh job and counts the fallback (:func:`fell_back`)."""
    reasons: list[str] = []
    for job in list(state.jobs):
        address = address_of(backend, job)
        if address is None:
            reasons.append(f"job {job.job_id} still starting")
            continue
        try:
            answer = standby.claim(address, config_text, num_events, claim_id, timeout_s)
        except standby.StandbyUnreachable:
            # it may still take the run late, while this transfer starts a fresh job: cancel it
            _cancel_quietly(backend, job.job_id)
            _drop(state, job, "dead", f"did not answer a claim within {timeout_s:g} s; cancelled")
            reasons.append(f"job {job.job_id} did not answer")
            continue
        if answer.get("accepted"):
            state.jobs = [j for j in state.jobs if j.job_id != job.job_id]
            state.remember_claim(claim_id, job.job_id)
            state.count("claimed", f"claimed: standby job {job.job_id} by {claim_id}")
            return ClaimResult(job_id=job.job_id, pool=state.spec.name, reason="claimed")
        if answer.get("busy"):
            _drop(state, job, "dead", f"was already taken by {answer.get('claim')}")
            reasons.append(f"job {job.job_id} was taken")
            continue
        state.count("refused", f"refused: standby job {job.job_id}: {answer.get('error')}")
        return ClaimResult(pool=state.spec.name, reason=f"refused: {answer.get('error')}")
    return ClaimResult(pool=state.spec.name, reason="; ".join(reasons) or "no standby job")


def fell_back(state: PoolState, claim_id: str, reason: str) -> None:
    state.count("fallbacks", f"fallback: {claim_id} submitted a fresh job ({reason})")


__all__ = [
    "ClaimResult",
    "PoolBook",
    "PoolSpec",
    "PoolState",
    "StandbyJob",
    "address_of",
    "check",
    "claim",
    "fell_back",
    "maintain",
    "submit",
]
