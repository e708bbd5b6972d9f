"""The shape of a transfer, defined once: its roles, task ids, XCom keys and connection rule.

Every module that names a transfer task or reads a transfer XCom imports it from here: the
operators and the task group, the kill cascade (``hooks/linked_jobs.py``), the transfer API's
store (``api/store.py``) and the ARP launcher (``arp/launch.py``). Task ids are the *unprefixed*
ones; inside a :class:`~airflow_provider_lclstream.task_groups.transfer.TransferTaskGroup` with
``prefix_group_id`` the group's tasks know their real ids, and the group hands them on.

Pure Python: no Airflow, no hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_lclstream.config.backends import backend_info

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_lclstream.config.transfer import TransferRequest

# -- roles: the three kinds of job a transfer starts (also the TransferRequest fields naming
#    each role's backend and connection)
BUFFER = "buffer"
CONSUMER = "consumer"
STREAMER = "streamer"
ROLES = (BUFFER, CONSUMER, STREAMER)

# -- task ids (the contract of dags/lclstream_transfer.py with the API and the ARP launcher)
START_BUFFER = "start_buffer"
START_CONSUMERS = "start_consumers"
RUN_STREAMER = "run_streamer"
WATCH_TRANSFER = "watch_transfer"
WAIT_CONSUMERS = "wait_consumers"
STOP_JOBS = "stop_jobs"
TASK_IDS = (START_BUFFER, START_CONSUMERS, RUN_STREAMER, WATCH_TRANSFER, WAIT_CONSUMERS, STOP_JOBS)

# -- XCom keys
JOB_ID = "job_id"  # one job (buffer, streamer)
JOB_IDS = "job_ids"  # several jobs (consumers)
JOB_URL = "job_url"
INPUT_URL = "input_url"
OUTPUT_URL = "output_url"
METRICS_URL = "metrics_url"
BUFFER_URL_KEYS = (INPUT_URL, OUTPUT_URL, METRICS_URL)
#: the address the buffer is reached at: its job's node, from the job backend (the URLs' host)
BUFFER_ADDRESS = "buffer_address"
#: every buffer of the transfer (``buffers`` of the request), in order: ``[{"index", "job_id",
#: "host", "input_url", "output_url", "metrics_url", ...}]``; the keys above hold buffer 0's
BUFFERS = "buffers"
METRICS_URLS = "metrics_urls"  # every buffer's metrics URL, in order (what the watch polls)
RETURN_VALUE = "return_value"  # Airflow's key for what a task returns

#: The task that starts each role's jobs, and the XCom key its job id(s) go to.
ROLE_JOBS: dict[str, tuple[str, str]] = {
    BUFFER: (START_BUFFER, JOB_ID),
    CONSUMER: (START_CONSUMERS, JOB_IDS),
    STREAMER: (RUN_STREAMER, JOB_ID),
}

#: ``{role: (task_id, xcom_key)}``: where each role's job ids are found in XCom.
JobSources = dict[str, tuple[str, str]]

#: A job to cancel with others: ``[conn_id | None, job_id]`` (plain JSON, triggers carry it).
LinkedJob = list[str | None]


def job_sources(task_id: Callable[[str], str] = str) -> JobSources:
    """Where each role's job ids are in XCom; ``task_id`` maps an unprefixed task id to the
    real one (the default keeps it, as in a group without ``prefix_group_id``)."""
    return {role: (task_id(task), key) for role, (task, key) in ROLE_JOBS.items()}


def role_conn_id(request: TransferRequest, role: str) -> str | None:
    """The connection of one role: given, else ``lclstream_<backend>``; None for ``local``
    without a connection (the local backend with its defaults)."""
    if role not in ROLES:
        raise ValueError(f"unknown transfer role {role!r}; one of {', '.join(ROLES)}")
    choice = getattr(request, role)
    if choice.conn_id:
        return str(choice.conn_id)
    return None if choice.backend == "local" else backend_conn_id(choice.backend)


def backend_conn_id(backend: str) -> str:
    """The default connection id of a job backend (the registry's, ``lclstream_<backend>``)."""
    return backend_info(backend).conn_id
