"""lclstream_warm_pool: keep warm streamers (or buffers) ready, so a run start streams within
seconds.

Each run is the health check of one warm pool (``WarmStreamerPoolOperator``): it drops standby
jobs that ended or do not answer, and submits ``lclstreamer --standby`` jobs (``role:
buffer``: ``lclstream-buffer --standby``; ``role: consumer``: ``lclstream-receive --standby``)
up to ``size``, on ``streamer_backend`` (the backend of the pool's jobs, whatever their role).
A transfer whose streamer matches the pool (backend connection, ranks, job attributes,
instrument) claims a standby job instead of submitting one: no SLURM queue, no MPI start and no
psana import before its first event; a transfer with one unpinned buffer on a buffer pool's
backend claims a standby buffer the same way, and its ``lclstream-receive`` consumers standby
consumers of a consumer pool. With none ready it submits a fresh job, and the pool
counts the fallback (shown on the transfers page and at ``GET /pools`` of the transfer API).

Paused when created. Unpause it for a shift (it runs every 5 minutes; the standby jobs end
after ``idle_timeout_s`` unused), or trigger it with other parameters for another instrument
or size; ``size: 0`` empties a pool.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_lclstream.config.backends import backend_names
from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.operators.warm_pool import WarmStreamerPoolOperator

BACKEND = settings.get("backend")

with DAG(
    dag_id="lclstream_warm_pool",
    description="Keep warm standby streamer jobs ready for run starts",
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    render_template_as_native_obj=True,
    tags=["lclstream"],
    params={
        "pool": Param("default", type="string", pattern=r"^[A-Za-z0-9_.-]+$"),
        "streamer_backend": Param(BACKEND, enum=backend_names()),
        "ranks": Param(2, type="integer", minimum=1),
        "size": Param(1, type="integer", minimum=0, maximum=64),
        "idle_timeout_s": Param(900, type="number", exclusiveMinimum=0),
        "instrument": Param(None, type=["null", "string"]),
        "wait_ready_s": Param(0, type="number", minimum=0),
        "role": Param(
            "streamer", enum=["streamer", "buffer", "consumer"], description="what to keep"
        ),
    },
) as dag:
    WarmStreamerPoolOperator(
        task_id="keep_warm",
        pool_name="{{ params.pool }}",
        backend="{{ params.streamer_backend }}",
        ranks="{{ params.ranks }}",
        size="{{ params.size }}",
        idle_timeout_s="{{ params.idle_timeout_s }}",
        instrument="{{ params.instrument }}",
        wait_ready_s="{{ params.wait_ready_s }}",
        role="{{ params.role }}",
    )

__all__ = ["dag"]
