"""lclstream_crystfel_remote: stream a run to CrystFEL at another HPC centre.

The streamer and buffer run at SLAC (SLURM); the consumer — CrystFEL's ``indexamajig`` reading
the stream — runs at NERSC through the Superfacility API or at OLCF through S3M (connections
``lclstream_sfapi`` / ``lclstream_s3m``). The buffer's output must be reachable from there
(``buffer_host`` is a data-transfer node).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_lclstream.task_groups.transfer import transfer_task_group

# CrystFEL's own ZeroMQ input speaks REQ/SUB, not PULL: the consumer receives the stream into
# HDF5 files on scratch, then indexes them.
CRYSTFEL = (
    'out="$SCRATCH/lclstream/$SLURM_JOB_ID" && mkdir -p "$out" && '
    'lclstream-receive --url "$LCLSTREAM_URL" --dial --transport "$LCLSTREAM_TRANSPORT" '
    '--out "$out" --quiet && ls "$out"/*.h5 > "$out/files.lst" && '
    'module load crystfel && indexamajig -i "$out/files.lst" -g detector.geom '
    '-o "$out/run.stream" -j 64 --peaks=peakfinder8'
)

with DAG(
    dag_id="lclstream_crystfel_remote",
    description="Stream a run to CrystFEL at NERSC (SFAPI) or OLCF (S3M)",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["lclstream", "example"],
    params={
        "exp": Param("mfxl1027522", type="string", pattern="^[a-z][a-z0-9]{2,31}$"),
        "run": Param(1, type="integer", minimum=0),
        "detector_name": Param("jungfrau", type="string"),
        "site": Param("nersc", enum=["nersc", "olcf"]),
    },
) as dag:

    @task(multiple_outputs=False)  # else Airflow pushes each key of the dict as an XCom too
    def crystfel_request() -> dict:
        from airflow_provider_lclstream.config.transfer import TransferRequest

        params = get_current_context()["params"]
        remote = (
            {"backend": "sfapi", "conn_id": "lclstream_sfapi"}
            if params["site"] == "nersc"
            else {"backend": "s3m", "conn_id": "lclstream_s3m"}
        )
        return TransferRequest(
            exp=params["exp"],
            run=params["run"],
            detector_name=params["detector_name"],
            mode="calib",
            img_per_file=10,
            compression="bitshuffle_with_zstd",
            ranks=16,
            consumer_command=CRYSTFEL,
            buffer_host="sdfdtn003",
            buffer_ports=(5000, 5001, 5002),
            streamer={"backend": "slurm", "conn_id": "lclstream_slurm"},
            buffer={"backend": "slurm", "conn_id": "lclstream_slurm"},
            consumer=remote,
        ).model_dump(mode="json")

    transfer_task_group(crystfel_request(), launcher="srun")
