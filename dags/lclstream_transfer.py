"""lclstream_transfer: stream one run (or synthetic frames) through a buffer to consumers.

Trigger it by hand (the form below), through the REST API / ``lclstream-arp-launch`` with conf
``{"request": {...TransferRequest...}}``, or with a full streamer config ``{"config": {...}}``.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_lclstream.config.backends import backend_names
from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.task_groups.transfer import transfer_task_group

BACKENDS = backend_names()  # every registered job backend (config/backends.py)
# Site defaults for the form: [lclstream] backend, output_dir, detector of the dag-processor.
BACKEND = settings.get("backend")
OUTPUT_DIR = settings.get("output_dir")
DETECTOR = settings.get_optional("detector") or "epix10k2M"

with DAG(
    dag_id="lclstream_transfer",
    description="Stream an LCLS run through LCLStreamer and a buffer to consumer jobs",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    tags=["lclstream"],
    params={
        "source": Param(
            "synthetic", enum=["synthetic", "run", "files"], description="what to stream"
        ),
        "exp": Param(
            "", type="string", pattern="^([a-z][a-z0-9]{2,31})?$", description="experiment"
        ),
        "run": Param(None, type=["null", "integer"], minimum=0, description="run number"),
        "files": Param("", type="string", description="xtc2 files, comma-separated"),
        "detector_name": Param(DETECTOR, type="string", pattern="^[A-Za-z0-9][A-Za-z0-9_.:+-]*$"),
        "mode": Param("raw", enum=["raw", "calib", "image"]),
        "access_mode": Param("smd", enum=["smd", "idx", "live"]),
        "events": Param(100, type=["null", "integer"], minimum=1, description="events per rank"),
        "img_per_file": Param(
            10, type="integer", minimum=1, maximum=10000, description="events per message"
        ),
        "compression": Param(
            None,
            type=["null", "string"],
            enum=[
                None,
                "gzip",
                "gzip_with_shuffle",
                "bitshuffle_with_lz4",
                "bitshuffle_with_zstd",
                "zfp",
            ],
        ),
        "library": Param("zmq", enum=["zmq", "nng"]),
        "ranks": Param(2, type="integer", minimum=1, maximum=4096),
        "buffers": Param(
            1,
            type="integer",
            minimum=1,
            maximum=64,
            description="buffers: rank r sends to buffer r % buffers, consumer i reads "
            "buffer i % buffers (at most ranks, at most consumers)",
        ),
        "consumers": Param(1, type="integer", minimum=1, maximum=256),
        "consumer_template": Param(
            None,
            type=["null", "string"],
            description="a consumer template of [lclstream] consumer_templates (default: "
            "lclstream-receive)",
        ),
        "consumer_params": Param({}, type="object", description="the template's parameters"),
        "consumer_command": Param(
            None,
            type=["null", "string"],
            description="raw shell command (admins only, [lclstream] api_admins)",
        ),
        "output_dir": Param(OUTPUT_DIR, type="string"),
        "buffer_host": Param(
            None,
            type=["null", "string"],
            description="pin the buffer to this node (SLURM backends); unset: where the "
            "backend places it (its address comes from the job)",
        ),
        "streamer_backend": Param(BACKEND, enum=BACKENDS),
        "buffer_backend": Param(BACKEND, enum=BACKENDS),
        "consumer_backend": Param(BACKEND, enum=BACKENDS),
    },
) as dag:

    @task(multiple_outputs=False)  # else Airflow pushes each key of the dict as an XCom too
    def build_request() -> dict:
        """Validate the request (errors name the field) and hand it to the transfer tasks."""
        from airflow_provider_lclstream.transfer.request import request_from

        context = get_current_context()
        caller = context["dag_run"].triggering_user_name  # never conf["user"]: anyone sets that
        return request_from(
            context["dag_run"].conf,
            dict(context["params"]),
            settings.get_optional("xtc_dir"),
            templates=settings.consumer_templates(),
            admin=caller is not None and caller in settings.admin_names(),
            caller=caller,
        )

    request = build_request()
    group = transfer_task_group(request)

    @task(multiple_outputs=False)  # else Airflow pushes each key of the dict as an XCom too
    def report(stats: dict) -> dict:
        """Log the transfer's numbers; post them to the ARP/Elog when the run came from there."""
        from airflow_provider_lclstream.hooks.elog import report_transfer

        context = get_current_context()
        return report_transfer(stats, context["dag_run"].conf or {})

    report(group.watch_transfer.output)
    request >> group
