"""The warm streamer pools in the Airflow Variable ``lclstream_warm_pools`` (issue #19).

The pools' logic is ``transfer/warm_pool.py``'s; this module loads and saves the
:class:`PoolBook` (JSON) and runs that logic on the job backend of each pool's connection:
:func:`maintain_pool` (the pool operator's health check) and :func:`claim_warm`
(``run_streamer``). Two tasks writing at once may lose one's update of the record; that is
safe: a claim is atomic on the standby job itself, a job missing from the record ends after its
idle timeout, and the next health check sets the record right.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from airflow_provider_lclstream.backends.base import JobBackendError
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.hooks.settings import _variable
from airflow_provider_lclstream.transfer import warm_pool
from airflow_provider_lclstream.transfer.warm_pool import PoolBook, PoolSpec, PoolState, Role

WARM_POOLS_VARIABLE = "lclstream_warm_pools"
NO_POOL = "no warm pool serves this job"
log = logging.getLogger(__name__)


def load_book(text: str | None = None) -> PoolBook:
    """The pools (from the Variable unless ``text`` is given); none is an empty book."""
    raw = _variable(WARM_POOLS_VARIABLE) if text is None else text
    if not raw or not raw.strip():
        return PoolBook()
    try:
        return PoolBook.model_validate_json(raw)
    except ValueError as err:
        raise LCLStreamError(
            f"Variable {WARM_POOLS_VARIABLE} is not a warm pool book: {err}; delete it and run "
            "the pool DAG again"
        ) from None


def save_book(book: PoolBook) -> None:
    value = book.model_dump_json()
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    if hasattr(runner, "SUPERVISOR_COMMS"):
        from airflow.sdk import Variable

        Variable.set(WARM_POOLS_VARIABLE, value)
    else:
        from airflow.models import Variable as ModelVariable

        ModelVariable.set(WARM_POOLS_VARIABLE, value)


def pool_summary(state: PoolState) -> dict[str, Any]:
    """What the API and the page show of a pool."""
    return {
        "name": state.spec.name,
        "spec": state.spec.model_dump(mode="json"),
        "jobs": [job.model_dump(mode="json") for job in state.jobs],
        "ready": sum(1 for job in state.jobs if job.address),
        "counters": dict(state.counters),
        "events": list(state.events),
        "checked": state.checked,
    }


def maintain_pool(
    spec: PoolSpec,
    *,
    ping_timeout_s: float = 2.0,
    wait_ready_s: float = 0.0,
    logbook_url: str | None = None,
) -> PoolState:
    """Create or update the pool ``spec.name``, check its jobs, submit up to its size, and
    wait up to ``wait_ready_s`` for every job to print its control address."""
    book = load_book()
    state = book.pools.get(spec.name) or PoolState(spec=spec)
    state.spec = spec
    backend = JobBackendHook(spec.conn_id).get_conn()
    warm_pool.maintain(state, backend, ping_timeout_s=ping_timeout_s, logbook_url=logbook_url)
    deadline = time.monotonic() + wait_ready_s
    while time.monotonic() < deadline:
        if all(warm_pool.address_of(backend, job) for job in state.jobs):
            break
        time.sleep(0.25)
    fresh = load_book()  # keep claims made while this ran
    merged = fresh.pools.get(spec.name)
    if merged is not None:
        taken = {job_id for job_id in merged.claims.values()}
        state.jobs = [job for job in state.jobs if job.job_id not in taken]
        state.claims = {**state.claims, **merged.claims}
    fresh.pools[spec.name] = state
    save_book(fresh)
    return state


def claim_warm(
    *,
    conn_id: str | None,
    ranks: int,
    launcher: str,
    attributes: dict[str, str],
    exp: str | None,
    config_text: str,
    num_events: int | None,
    claim_id: str,
    logbook_url: str | None = None,
    role: Role = "streamer",
    top_up: bool = True,
) -> tuple[str | None, str]:
    """A standby job of a pool that serves this streamer (or buffer: ``role``), now running
    ``config_text``; or None and why (no pool serves it: nothing is counted; else the fallback
    is counted). The pool is topped up to its size after the claim (``top_up``; a caller that
    claims several jobs at once tops up after the last: :func:`top_up_pools`)."""
    try:
        book = load_book()
    except Exception as err:  # a broken Variable or no metadata database: no warm pool
        log.warning("warm pools unusable: %s", err)
        return None, NO_POOL
    pools = book.serving(conn_id, ranks, launcher, attributes, exp, role)
    if not pools:
        return None, NO_POOL
    backend = JobBackendHook(conn_id).get_conn()
    found: str | None = None
    reasons = []
    for state in pools:
        result = warm_pool.claim(state, backend, config_text, num_events, claim_id)
        if result.job_id:
            found = result.job_id
            reasons = [f"claimed standby job {found} of pool {state.spec.name}"]
            break
        reasons.append(f"pool {state.spec.name}: {result.reason}")
    if found is None:
        warm_pool.fell_back(pools[0], claim_id, "; ".join(reasons))
    if top_up:  # after the claim: not on the run's critical path
        for state in pools:
            _top_up(state, backend, logbook_url)
    try:
        save_book(book)
    except Exception as err:  # the claimed job runs the stream whatever the record says
        log.warning("could not record the warm pools (%s); the next health check will", err)
    return found, "; ".join(reasons)


def _top_up(state: PoolState, backend: Any, logbook_url: str | None) -> int:
    """Submit standby jobs until the pool has its size; how many were submitted."""
    submitted = 0
    try:
        while len(state.jobs) < state.spec.size:
            warm_pool.submit(state, backend, logbook_url)
            submitted += 1
    except JobBackendError as err:
        log.warning("could not top up warm pool %s: %s", state.spec.name, err)
    return submitted


def top_up_pools(logbook_url: str | None = None) -> int:
    """Submit standby jobs to every pool below its size (after claims made with ``top_up``
    off); how many were submitted. Jobs that ended are left to the health check."""
    book = load_book()
    submitted = 0
    for state in book.pools.values():
        if len(state.jobs) < state.spec.size:
            backend = JobBackendHook(state.spec.conn_id).get_conn()
            submitted += _top_up(state, backend, logbook_url)
    if submitted:
        save_book(book)
    return submitted


def serves_now(
    book: PoolBook,
    conn_id: str | None,
    ranks: int,
    launcher: str,
    attributes: dict[str, str],
    exp: str | None,
    role: Role = "streamer",
) -> bool:
    """Whether a pool of ``book`` serves this job and holds a standby job (ready or starting)."""
    pools = book.serving(conn_id, ranks, launcher, attributes, exp, role)
    return any(state.jobs for state in pools)


def claimed_job(name: str) -> str | None:
    """The standby job an earlier try of task job ``name`` claimed (a retry resumes it)."""
    try:
        return load_book().claimed_job(name)
    except Exception as err:  # as in claim_warm: no readable record, no claim to resume
        log.warning("warm pools unusable: %s", err)
        return None


def pool_summaries() -> list[dict[str, Any]]:
    """Every pool's :func:`pool_summary`, by name (the transfer API's ``/v1/warm-pools``)."""
    book = load_book()
    return [pool_summary(book.pools[name]) for name in sorted(book.pools)]


__all__ = [
    "NO_POOL",
    "WARM_POOLS_VARIABLE",
    "claim_warm",
    "claimed_job",
    "load_book",
    "maintain_pool",
    "pool_summaries",
    "pool_summary",
    "save_book",
    "serves_now",
    "top_up_pools",
]
