"""Jobs that must stop together: when a user kills one transfer task, every job goes.

A linked job is ``[conn_id | None, job_id]`` (plain JSON, so triggers can carry the list).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)
LinkedJob = list[Any]  # [conn_id | None, job_id]

# (role, task id, XCom key) of the jobs a transfer starts.
TRANSFER_JOBS = (
    ("buffer", "start_buffer", "job_id"),
    ("consumer", "start_consumers", "job_ids"),
    ("streamer", "run_streamer", "job_id"),
)


def linked_jobs(context: Any, request: Any, prefix: str = "") -> list[LinkedJob]:
    """Every job of this transfer run found in XCom so far, with its role's connection."""
    from airflow_provider_lclstream.operators.transfer import pull_ids, role_conn_id

    jobs: list[LinkedJob] = []
    for role, task_id, key in TRANSFER_JOBS:
        for job_id in pull_ids(context, prefix + task_id, key):
            jobs.append([role_conn_id(request, role), job_id])
    return jobs


async def acancel_all(jobs: Iterable[LinkedJob]) -> None:
    """Cancel each job (errors logged, never raised: the others must still be cancelled)."""
    from airflow_provider_lclstream.hooks.job_backend import JobBackendHook

    for conn_id, job_id in jobs:
        try:
            backend = JobBackendHook(conn_id).get_conn()
            await backend.acancel(str(job_id))
            log.info("cancelled linked job %s", job_id)
        except (LCLStreamError, OSError, ValueError) as err:
            log.warning("could not cancel linked job %s: %s", job_id, err)


def cancel_all(jobs: Iterable[LinkedJob]) -> None:
    from airflow_provider_lclstream.hooks.job_backend import JobBackendHook

    for conn_id, job_id in jobs:
        try:
            JobBackendHook(conn_id).get_conn().cancel(str(job_id))
            log.info("cancelled linked job %s", job_id)
        except (LCLStreamError, OSError, ValueError) as err:
            log.warning("could not cancel linked job %s: %s", job_id, err)
