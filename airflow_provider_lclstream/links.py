"""Extra links of the provider's tasks: URLs a browser opens, built from ``[api] base_url``.

- "Transfer" (:class:`TransferLink`): the transfers page of Airflow's API server for the task's
  DAG run, ``<base_url>/lclstream/ui?id=<run id>``; empty for DAGs other than
  ``lclstream_transfer``, whose runs that page does not list.
- "Job" (:class:`~airflow_provider_lclstream.operators.submit_job.JobLink`): the task's log in
  Airflow, where the job's output is streamed; empty before a job was submitted.

Airflow calls ``get_link`` in the API server, so ``[api] base_url`` is the server's own; unset,
the links are paths on the same server, which the browser resolves.

Operators and sensors both use these links, so they live below both (``operators/links.py``
re-exports them).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseOperatorLink

from airflow_provider_lclstream.transfer.urls import TRANSFER_DAG_ID, absolute, transfer_page_path


def airflow_url(path: str) -> str:
    """``path`` under Airflow's ``[api] base_url`` (as ``build_airflow_dagrun_url`` does)."""
    return absolute(conf.get("api", "base_url", fallback="/"), path)


def task_log_url(ti_key: Any) -> str:
    """The task instance's log page (one try) in Airflow's UI, as ``TaskInstance.log_url``."""
    index, tries = ti_key.map_index, ti_key.try_number
    map_index = f"/mapped/{index}" if index is not None and index >= 0 else ""
    try_number = f"?try_number={tries}" if tries is not None and tries > 0 else ""
    return airflow_url(
        f"/dags/{quote(ti_key.dag_id, safe='')}/runs/{quote(ti_key.run_id, safe='')}"
        f"/tasks/{quote(ti_key.task_id, safe='')}{map_index}{try_number}"
    )


class TransferLink(BaseOperatorLink):
    """The "Transfer" button: the transfers page showing this DAG run's transfer."""

    name = "Transfer"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if ti_key.dag_id != TRANSFER_DAG_ID:
            return ""
        return airflow_url(transfer_page_path(ti_key.run_id))
