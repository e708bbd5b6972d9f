"""Entry point of the ``apache_airflow_provider`` group: what this provider registers."""

from __future__ import annotations

from typing import Any

from airflow_provider_lclstream import __version__

PACKAGE = "airflow_provider_lclstream"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-lclstream",
        "name": "LCLStream",
        "description": "Stream LCLS data (psana2, synthetic, HDF5) through LCLStreamer and "
        "buffers to remote analysis (SLURM, Psi-K, NERSC SFAPI, OLCF S3M), as Airflow tasks.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "LCLStream",
                "external-doc-url": "https://github.com/slac-lcls/lclstreamer",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "LCLStream",
                "python-modules": [
                    f"{PACKAGE}.operators.submit_job",
                    f"{PACKAGE}.operators.transfer",
                    f"{PACKAGE}.operators.run_start",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "LCLStream",
                "python-modules": [f"{PACKAGE}.sensors.job", f"{PACKAGE}.sensors.transfer"],
            }
        ],
        "hooks": [
            {
                "integration-name": "LCLStream",
                "python-modules": [f"{PACKAGE}.hooks.job_backend", f"{PACKAGE}.hooks.elog"],
            }
        ],
        "triggers": [
            {
                "integration-name": "LCLStream",
                "python-modules": [
                    f"{PACKAGE}.triggers.job_state",
                    f"{PACKAGE}.triggers.elog_run_event",
                    f"{PACKAGE}.triggers.transfer",
                ],
            }
        ],
        "extra-links": [f"{PACKAGE}.operators.submit_job.JobLink"],
        "connection-types": [
            {
                "connection-type": conn_type,
                "hook-class-name": f"{PACKAGE}.hooks.job_backend.{hook}",
            }
            for conn_type, hook in (
                ("lclstream_local", "JobBackendHook"),
                ("lclstream_slurm", "SlurmJobHook"),
                ("lclstream_slurm_cli", "SlurmCliJobHook"),
                ("lclstream_sfapi", "SfapiJobHook"),
                ("lclstream_psik", "PsikJobHook"),
                ("lclstream_s3m", "S3mJobHook"),
            )
        ]
        + [
            {
                "connection-type": "lclstream_elog",
                "hook-class-name": f"{PACKAGE}.hooks.elog.ElogHook",
            }
        ],
    }
