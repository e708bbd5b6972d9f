"""lclstream_on_run_start: a transfer for every run start the Elog announces on Kafka.

An ``AssetWatcher`` runs ``ElogRunEventTrigger`` in the triggerer; each run-start event updates
the asset and schedules this DAG, which starts one ``lclstream_transfer`` run per event: the
first from ``start_transfer`` at once, any that arrived together with it (they share a DAG run
here, never a transfer) from the mapped ``start_more_transfers`` after it.

Configure in Airflow's ``[lclstream]`` section. Of the dag-processor (read when this file is
parsed): ``kafka_conn_id`` (a ``lclstream_kafka`` connection, for SASL/TLS) or
``kafka_bootstrap`` (host:port), ``experiments`` (regex of experiment names) and the
form defaults ``detector``, ``backend`` (all three roles), ``output_dir``. Of the workers:
``xtc_dir`` (psana ``dir=``). The buffer
host is 127.0.0.1: for jobs on several hosts, trigger ``lclstream_transfer`` with a request
that sets ``buffer_host``.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Asset, AssetWatcher, Param, get_current_context, task

from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.operators.run_start import (
    MORE_XCOM_KEY,
    StartRunTransfersOperator,
)
from airflow_provider_lclstream.triggers.elog_run_event import ElogRunEventTrigger

BACKENDS = ["local", "slurm", "slurm_cli", "psik", "sfapi", "s3m"]
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
                experiment_pattern=settings.get_optional("experiments"),
            ),
        )
    ],
)

with DAG(
    dag_id="lclstream_on_run_start",
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
    first = StartRunTransfersOperator(task_id="start_transfer")

    @task
    def more_run_starts() -> list[dict]:
        """Confs of the run starts that came with the first (usually none)."""
        ti = get_current_context()["ti"]
        return list(ti.xcom_pull(task_ids="start_transfer", key=MORE_XCOM_KEY) or [])

    more = more_run_starts()
    first >> more
    TriggerDagRunOperator.partial(
        task_id="start_more_transfers", trigger_dag_id="lclstream_transfer"
    ).expand(conf=more)
