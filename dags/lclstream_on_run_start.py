"""lclstream_on_run_start: a transfer for every run start the Elog announces on Kafka.

An ``AssetWatcher`` runs ``ElogRunEventTrigger`` in the triggerer; each run-start event updates
the asset and schedules this DAG, which starts ``lclstream_transfer`` runs: the first from
``start_transfer`` at once, the others (several subscriptions matched, or run starts arrived
together) from the mapped ``start_more_transfers`` after it. Where warm pools serve the first
transfer, ``start_transfer`` claims its jobs before it triggers it (prestart:
``operators/prestart.py``), and ``top_up_warm_pools`` submits the pools' new standby jobs.

Which transfers: one per enabled **subscription** that matches the run start (created through
the transfer API, ``lclstream subscriptions create``; read at every run start, so a change
needs no re-parse). While no subscription exists, the quick start: one transfer per run start
of an experiment that ``[lclstream] experiments`` matches, with the form defaults below.

Configure in Airflow's ``[lclstream]`` section. Of the dag-processor (read when this file is
parsed): ``kafka_conn_id`` (a ``lclstream_kafka`` connection, for SASL/TLS) or
``kafka_bootstrap`` (host:port), and the quick start's form defaults ``detector``, ``backend``
(all three roles), ``output_dir``. Of the workers: ``experiments`` (quick start), ``xtc_dir``
(psana ``dir=``). The buffer
runs where its backend places it; producers and consumers reach it at its job's node.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Asset, AssetWatcher, Param, get_current_context, task

from airflow_provider_lclstream.config.backends import backend_names
from airflow_provider_lclstream.config.subscriptions import RUN_START_DAG_ID, RUN_START_TASK_ID
from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.operators.run_start import (
    MORE_XCOM_KEY,
    StartRunTransfersOperator,
)
from airflow_provider_lclstream.triggers.elog_run_event import ElogRunEventTrigger

BACKENDS = backend_names()  # every registered job backend (config/backends.py)
BACKEND = settings.get("backend")

run_starts = Asset(
    "lclstream_elog_run_starts",
    watchers=[
        AssetWatcher(
            name="elog_run_start",
            trigger=ElogRunEventTrigger(
                group_id="lclstream-on-run-start",
                kinds=["run_start"],
                # a lclstream_kafka connection (SASL/TLS, secrets) when set, else plain servers
                kafka_conn_id=settings.get_optional("kafka_conn_id"),
                bootstrap_servers=settings.get("kafka_bootstrap"),
                # every run start reaches the DAG: subscriptions (read at each run start) or the
                # quick-start [lclstream] experiments choose; the rest are counted as unmatched
            ),
        )
    ],
)

with DAG(
    dag_id=RUN_START_DAG_ID,
    description="Start an LCLStream transfer at every run start announced by the Elog",
    schedule=[run_starts],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["lclstream"],
    params={
        "detector_name": Param(settings.get_optional("detector") or "xppcspad", type="string"),
        "mode": Param("raw", enum=["raw", "calib", "image"]),
        "ranks": Param(2, type="integer", minimum=1),
        "img_per_file": Param(10, type="integer", minimum=1),
        "output_dir": Param(settings.get("output_dir"), type="string"),
        "streamer_backend": Param(BACKEND, enum=BACKENDS),
        "buffer_backend": Param(BACKEND, enum=BACKENDS),
        "consumer_backend": Param(BACKEND, enum=BACKENDS),
    },
) as dag:
    # inlets: it also takes run starts that came after its DAG run was queued (Airflow 3.3
    # would leave them to the next run start's DAG run)
    first = StartRunTransfersOperator(
        task_id=RUN_START_TASK_ID,
        inlets=[run_starts],
        top_up=False,  # top_up_warm_pools does, while the transfer runs
    )

    @task(trigger_rule="all_done")
    def top_up_warm_pools() -> int:
        """New standby jobs for the warm pools the first transfer's prestart claimed from."""
        from airflow_provider_lclstream.hooks.warm_pool import top_up_pools
        from airflow_provider_lclstream.operators.prestart import PRESTART_CONF_KEY

        ti = get_current_context()["ti"]
        if not ti.xcom_pull(task_ids=first.task_id, key=PRESTART_CONF_KEY):
            return 0
        return top_up_pools(settings.get_optional("logbook_url"))

    first >> top_up_warm_pools()

    @task(trigger_rule="none_failed")  # also when the first was a replay (skipped)
    def more_run_starts() -> list[dict]:
        """``{conf, trigger_run_id}`` of the transfers after the first (usually none)."""
        ti = get_current_context()["ti"]
        return list(ti.xcom_pull(task_ids=first.task_id, key=MORE_XCOM_KEY) or [])

    more = more_run_starts()
    first >> more
    TriggerDagRunOperator.partial(
        task_id="start_more_transfers",
        trigger_dag_id="lclstream_transfer",
        skip_when_already_exists=True,  # a replayed run-start message starts nothing twice
    ).expand_kwargs(more)
