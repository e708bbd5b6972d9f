"""Airflow 3 plugin: the LCLStream transfer API and page inside Airflow's API server.

Registered through the ``airflow.plugins`` entry point of this package, so installing the package
is enough (nothing to copy into the plugins folder). Mounted at ``/lclstream``
(``/lclstream/v1/transfers``, ``/lclstream/ui``) behind Airflow's own JWT authentication; the page
also appears as a "Transfers" entry in the navigation and as an "LCLStream transfer" tab on DAG
runs.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_lclstream.api.airflow_app import create_airflow_app
from airflow_provider_lclstream.transfer.urls import UI_PATH, URL_PREFIX


class LCLStreamApiPlugin(AirflowPlugin):
    """The transfer API (FastAPI sub-app) plus links to its page."""

    name = "lclstream_api"
    fastapi_apps = [
        {"app": create_airflow_app(), "url_prefix": URL_PREFIX, "name": "LCLStream transfer API"}
    ]
    external_views = [
        {
            "name": "LCLStream transfers",
            "href": UI_PATH,
            "destination": "nav",
            "url_route": "lclstream-transfers",
            "category": "browse",
        },
        {
            "name": "LCLStream transfer",
            "href": f"{UI_PATH}?id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "lclstream-transfer-run",
        },
    ]
