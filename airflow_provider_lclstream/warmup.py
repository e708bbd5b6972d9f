"""Pre-import what a transfer's tasks import, once per Airflow process (issue #19).

Airflow 3's LocalExecutor forks its workers from the scheduler, and each worker forks a process
per task, which parses the DAG file and imports what the task needs. Without this, every task of
``lclstream_transfer`` pays those imports again (about 0.1 s to parse the DAG file and more in
``execute`` on the 2-core dev VM, several times on a run start's critical path). Called from
``airflow_local_settings.py``, which every Airflow process imports at start-up, the modules are
in the scheduler before it forks, so every worker and task inherits them::

    # $AIRFLOW_HOME/config/airflow_local_settings.py
    from airflow_provider_lclstream.warmup import preload

    preload()

The test deployment does this (``scripts/services/airflow_home/airflow_local_settings.py``);
``bench/latency.py`` says so in its output (``preload=1``). It costs every Airflow process,
CLI commands included, about 1.5 s at start on the dev VM (kafka-python is most of the rise).
"""

from __future__ import annotations

import importlib
import logging
import time

MODULES = (
    "airflow_provider_lclstream.task_groups.transfer",
    "airflow_provider_lclstream.operators.transfer",
    "airflow_provider_lclstream.operators.run_start",
    "airflow_provider_lclstream.operators.warm_pool",
    "airflow_provider_lclstream.sensors.transfer",
    "airflow_provider_lclstream.transfer.request",
    "airflow_provider_lclstream.hooks.warm_pool",
    "airflow_provider_lclstream.hooks.elog",
    "airflow_provider_lclstream.triggers.job_state",
    "airflow_provider_lclstream.backends.local",
    "airflow_provider_lclstream.backends.slurm_rest",
    "airflow_provider_lclstream.backends.slurm_cli",
    "airflow_provider_lclstream.streamer.standby",
    "airflow.providers.standard.operators.trigger_dagrun",
    "airflow.providers.standard.operators.empty",
    # lclstream_on_run_start's AssetWatcher trigger (kafka-python): ~0.3 s of each of its
    # tasks' parse of the DAG file otherwise, on the Kafka path's critical path
    "airflow_provider_lclstream.triggers.elog_run_event",
    # ``from airflow.sdk import task`` in a DAG file imports these lazily: ~0.08 s of every
    # task's first parse of its DAG file otherwise
    "airflow.sdk.definitions.decorators",
    "airflow.providers.standard.decorators.python",
    "zmq",
)
"""The modules of ``lclstream_transfer``'s and ``lclstream_on_run_start``'s tasks."""

log = logging.getLogger(__name__)


def preload(modules: tuple[str, ...] = MODULES) -> dict[str, float]:
    """Import ``modules``; the seconds each took. One that cannot be imported is logged and
    skipped: a process must start whatever is missing."""
    took: dict[str, float] = {}
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as err:  # an optional extra missing, or a broken install
            log.warning("lclstream preload: cannot import %s: %s", name, err)
            continue
        took[name] = time.perf_counter() - started
    return took


__all__ = ["MODULES", "preload"]
