"""lclstream_peaknet_inference: stream calibrated frames to a GPU job that batches them for
PeakNet. The consumer runs on a GPU partition through SLURM (connection ``lclstream_slurm``);
the streamer and buffer run on the facility cluster.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_lclstream.task_groups.transfer import transfer_task_group

CONSUMER = (
    'python -m airflow_provider_lclstream.consumer.peaknet --url "$LCLSTREAM_URL" '
    '--transport "$LCLSTREAM_TRANSPORT" --batch 32 --height 512 --width 512'
)

with DAG(
    dag_id="lclstream_peaknet_inference",
    description="Stream a run's calibrated frames to PeakNet inference on GPUs",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["lclstream", "example"],
    params={
        "exp": Param("mfxl1027522", type="string", pattern="^[a-z][a-z0-9]{2,31}$"),
        "run": Param(1, type="integer", minimum=0),
        "detector_name": Param("jungfrau", type="string"),
        "gpu_partition": Param("ampere", type="string"),
    },
) as dag:

    @task
    def peaknet_request() -> dict:
        from airflow_provider_lclstream.config.transfer import TransferRequest

        params = get_current_context()["params"]
        return TransferRequest(
            exp=params["exp"],
            run=params["run"],
            detector_name=params["detector_name"],
            mode="calib",
            img_per_file=16,
            compression="bitshuffle_with_lz4",
            ranks=8,
            consumers=2,
            consumer_command=CONSUMER,
            buffer_host="sdfdtn003",
            buffer_ports=(5000, 5001, 5002),
            streamer={"backend": "slurm", "conn_id": "lclstream_slurm"},
            buffer={"backend": "slurm", "conn_id": "lclstream_slurm"},
            consumer={
                "backend": "slurm",
                "conn_id": "lclstream_slurm",
                "attributes": {"partition": params["gpu_partition"], "gpus": "1"},
            },
        ).model_dump(mode="json")

    transfer_task_group(peaknet_request(), launcher="srun")
