"""The kill cascade: jobs that must stop together when a user kills one transfer task.

A linked job is ``[conn_id | None, job_id]`` (plain JSON, so triggers can carry the list).
:func:`linked_jobs` finds a transfer's jobs in XCom at the task ids it is given (a task group
hands on its tasks' real, possibly prefixed, ids); :func:`cancel_all` (in a worker) and
:func:`acancel_all` (on the triggerer's event loop, never blocking it) cancel each one and
return every failure instead of stopping at the first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.exceptions import JobNotFoundError
from airflow_provider_lclstream.hooks.job_backend import JobBackendHook
from airflow_provider_lclstream.transfer.layout import LinkedJob, job_sources, role_conn_id

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from airflow_provider_lclstream.backends.base import JobBackend
    from airflow_provider_lclstream.config.transfer import TransferRequest

log = logging.getLogger(__name__)

__all__ = ["LinkedJob", "acancel_all", "cancel_all", "linked_jobs", "pull_ids"]


def pull_ids(context: Any, task_id: str, key: str) -> list[str]:
    """The job id(s) task ``task_id`` pushed under ``key`` (one id or a list), else ``[]``."""
    value = context["ti"].xcom_pull(task_ids=task_id, key=key)
    if not value:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def linked_jobs(
    context: Any, request: TransferRequest, sources: Mapping[str, tuple[str, str]] | None = None
) -> list[LinkedJob]:
    """Every job of this transfer run found in XCom so far, with its role's connection.

    ``sources`` maps each role to the ``(task_id, key)`` holding its job ids (default: the
    unprefixed task ids of :mod:`~airflow_provider_lclstream.transfer.layout`).
    """
    jobs: list[LinkedJob] = []
    for role, (task_id, key) in (sources or job_sources()).items():
        for job_id in pull_ids(context, task_id, key):
            jobs.append([role_conn_id(request, role), job_id])
    return jobs


def _failure(job_id: Any, err: Exception) -> str | None:
    if isinstance(err, JobNotFoundError):  # gone already: nothing left to cancel
        log.info("linked job %s is unknown to its backend (gone already): %s", job_id, err)
        return None
    log.warning("could not cancel linked job %s: %s: %s", job_id, type(err).__name__, err)
    return f"job {job_id}: {type(err).__name__}: {err}"


def cancel_all(jobs: Iterable[LinkedJob]) -> list[str]:
    """Cancel each job; every failure is logged and returned, none raised (the others must
    still be cancelled)."""
    failures: list[str] = []
    backends: dict[str | None, JobBackend] = {}
    for conn_id, job_id in jobs:
        try:
            if conn_id not in backends:
                backends[conn_id] = JobBackendHook(conn_id).get_conn()
            backends[conn_id].cancel(str(job_id))
            log.info("cancelled linked job %s", job_id)
        except Exception as err:
            failure = _failure(job_id, err)
            if failure:
                failures.append(failure)
    return failures


async def acancel_all(jobs: Iterable[LinkedJob]) -> list[str]:
    """:func:`cancel_all` through the hook's and the backends' async half: safe on the
    triggerer's event loop. The backends it created are closed at the end."""
    failures: list[str] = []
    backends: dict[str | None, JobBackend] = {}
    for conn_id, job_id in jobs:
        try:
            if conn_id not in backends:
                backends[conn_id] = await JobBackendHook(conn_id).aget_conn()
            await backends[conn_id].acancel(str(job_id))
            log.info("cancelled linked job %s", job_id)
        except Exception as err:
            failure = _failure(job_id, err)
            if failure:
                failures.append(failure)
    for backend in backends.values():
        try:
            await backend.aclose()
        except Exception as err:
            log.debug("closing the job backend failed: %s", err)
    return failures
