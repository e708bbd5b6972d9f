"""Airflow 3 plugin: the LCLStream transfer API and page inside Airflow's API server.

Mounted at ``/lclstream`` (``/lclstream/v1/transfers``, ``/lclstream/ui``) behind Airflow's own
JWT authentication; the page also appears as a "Transfers" entry in the navigation and as an
"LCLStream transfer" tab on DAG runs.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_lclstream.api.airflow_app import create_airflow_app

URL_PREFIX = "/lclstream"


class LCLStreamApiPlugin(AirflowPlugin):
    """The transfer API (FastAPI sub-app) plus links to its page."""

    name = "lclstream_api"
    fastapi_apps = [
        {"app": create_airflow_app(), "url_prefix": URL_PREFIX, "name": "LCLStream transfer API"}
    ]
    external_views = [
        {
            "name": "LCLStream transfers",
            "href": f"{URL_PREFIX}/ui",
            "destination": "nav",
            "url_route": "lclstream-transfers",
            "category": "browse",
        },
        {
            "name": "LCLStream transfer",
            "href": f"{URL_PREFIX}/ui?id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "lclstream-transfer-run",
        },
    ]
