"""Entry point of the ``apache_airflow_provider`` group: what this provider registers.

Connection forms come from the settings models (``config/connections.py``), the ``[lclstream]``
configuration section from ``hooks/settings.py``; neither imports Airflow.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_lclstream import __version__
from airflow_provider_lclstream.config.connections import connection_types
from airflow_provider_lclstream.hooks.settings import config_section

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
                    f"{PACKAGE}.operators.jobs",
                    f"{PACKAGE}.operators.run_start",
                    f"{PACKAGE}.operators.warm_pool",
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
                    f"{PACKAGE}.triggers.buffer",
                ],
            }
        ],
        "extra-links": [
            f"{PACKAGE}.operators.submit_job.JobLink",
            f"{PACKAGE}.links.TransferLink",
        ],
        "connection-types": connection_types(PACKAGE),
        "config": config_section(),
    }
