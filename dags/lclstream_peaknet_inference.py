"""lclstream_peaknet_inference: stream frames through a buffer to PeakNet inference on Ray.

The consumer is one ``lclstream-infer`` job (``--readers`` connections to the buffer, PeakNet on
the node's GPUs or CPU workers, CXI peak lists out); ``report`` checks its summary against the
buffer's count. Trigger it by hand (the form), or with conf ``{"request": {...}}`` (a transfer
request as for ``lclstream_transfer``, e.g. ``{"config": {...}}`` for a full streamer config)
plus the inference params at the top level of the conf (they override the form's)::

    {"request": {"synthetic": true, "events": 50, "consumer": {"backend": "slurm",
                 "conn_id": "lclstream_slurm"}},
     "checkpoint": "/sdf/models/peaknet.safetensors", "model_config": "/sdf/models/peaknet.yaml",
     "ray": "slurm", "nodes": 2, "gpu_partition": "ampere", "gpus_per_node": 4}

``ray``: ``local`` starts Ray in the consumer job; ``slurm`` starts a Ray head and workers with
``srun`` inside the consumer's SLURM allocation; ``address`` joins ``ray_address``.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_lclstream.config.backends import backend_names
from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.task_groups.transfer import transfer_task_group

BACKENDS = backend_names()  # every registered job backend (config/backends.py)
BACKEND = settings.get("backend")
OUTPUT_DIR = settings.get("output_dir")
DETECTOR = settings.get_optional("detector") or "epix10k2M"
OPTIONAL_INT = ["null", "integer"]

with DAG(
    dag_id="lclstream_peaknet_inference",
    description="Stream a run's frames to PeakNet inference on Ray (lclstream-infer)",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=2,
    tags=["lclstream", "example"],
    params={
        # what to stream (as lclstream_transfer; conf {"request": {...}} replaces these)
        "source": Param("synthetic", enum=["synthetic", "run"], description="what to stream"),
        "exp": Param("", type="string", pattern="^([a-z][a-z0-9]{2,31})?$"),
        "run": Param(None, type=OPTIONAL_INT, minimum=0),
        "detector_name": Param(DETECTOR, type="string", pattern="^[A-Za-z0-9][A-Za-z0-9_.:+-]*$"),
        "mode": Param("calib", enum=["raw", "calib", "image"]),
        "events": Param(100, type=OPTIONAL_INT, minimum=1, description="events per rank"),
        "img_per_file": Param(16, type="integer", minimum=1, maximum=10000),
        "library": Param("zmq", enum=["zmq", "nng"]),
        "ranks": Param(2, type="integer", minimum=1, maximum=4096),
        "output_dir": Param(OUTPUT_DIR, type="string", description="CXI files go under here"),
        "buffer_host": Param(
            None,
            type=["null", "string"],
            description="pin the buffer to this node (SLURM backends); unset: where the "
            "backend places it (its address comes from the job)",
        ),
        "streamer_backend": Param(BACKEND, enum=BACKENDS),
        "buffer_backend": Param(BACKEND, enum=BACKENDS),
        "consumer_backend": Param(BACKEND, enum=BACKENDS),
        # the lclstream-infer consumer
        "checkpoint": Param("", type="string", description="PeakNet weights (.safetensors/.pt)"),
        "model_config": Param(None, type=["null", "string"], description="PeakNet config file"),
        "height": Param(512, type="integer", minimum=1, description="model input height"),
        "width": Param(512, type="integer", minimum=1, description="model input width"),
        "batch_size": Param(8, type="integer", minimum=1),
        "readers": Param(2, type="integer", minimum=1, maximum=256, description="S actors"),
        "p_actors": Param(None, type=OPTIONAL_INT, minimum=1, description="default: per GPU"),
        "device": Param("auto", enum=["auto", "cpu", "cuda"]),
        "min_peaks": Param(10, type="integer", minimum=0, description="a hit has this many"),
        "events_per_file": Param(1000, type="integer", minimum=1),
        "save_frames": Param(False, type="boolean"),
        "all_events": Param(False, type="boolean", description="write misses too"),
        "keep_logits": Param(False, type="boolean", description="debugging; large"),
        "timeout_s": Param(600, type="number", minimum=1, description="buffer silence limit"),
        "max_restarts": Param(2, type="integer", minimum=0, description="P actor restarts"),
        "ray": Param("local", enum=["local", "address", "slurm"], description="where Ray runs"),
        "ray_address": Param(None, type=["null", "string"], description="with ray: address"),
        "gpu_partition": Param(
            "", type="string", pattern="^[A-Za-z0-9_.,-]*$", description="consumer's partition"
        ),
        "gpus_per_node": Param(None, type=OPTIONAL_INT, minimum=1),
        "nodes": Param(None, type=OPTIONAL_INT, minimum=1, description="with ray: slurm"),
    },
) as dag:

    @task(multiple_outputs=False)  # else Airflow pushes each key of the dict as an XCom too
    def build_request() -> dict:
        """The transfer request with the lclstream-infer consumer (errors name the field)."""
        from airflow_provider_lclstream.transfer.inference import inference_request
        from airflow_provider_lclstream.transfer.request import request_from

        context = get_current_context()
        params = dict(context["params"])
        request = request_from(context["dag_run"].conf, params, settings.get_optional("xtc_dir"))
        return inference_request(request, params, context["run_id"])

    request = build_request()
    group = transfer_task_group(request)

    @task(multiple_outputs=False)  # else Airflow pushes each key of the dict as an XCom too
    def report(request: dict, stats: dict) -> dict:
        """Read lclstream-infer's summary; fail unless every delivered frame was inferred."""
        from airflow_provider_lclstream.config.transfer import TransferRequest
        from airflow_provider_lclstream.transfer.inference import (
            check_summary,
            output_directory,
            read_summary,
        )

        context = get_current_context()
        out = output_directory(TransferRequest.model_validate(request), context["run_id"])
        summary = read_summary(out)
        check_summary(summary, stats.get("events"), out)
        print(
            f"{summary['frames_inferred']} frames inferred, {summary['hits']} hits, "
            f"{summary['peaks']} peaks in {len(summary['files'])} CXI files under {out}"
        )
        return summary

    summary = report(request, group.watch_transfer.output)  # type: ignore[arg-type]
    group.wait_consumers >> summary
    request >> group
