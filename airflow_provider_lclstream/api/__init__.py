"""The LCLStream transfer API: ``/v1/transfers`` over DAG runs of ``lclstream_transfer``.

Served inside Airflow's API server by ``api/plugin.py`` (Airflow's JWT auth)
or standalone by ``lclstream-api`` (certified mutual TLS); ``lclstream`` is the client.
Nothing here imports Airflow at import time except :mod:`.airflow_app` and :mod:`.plugin`.
"""

from __future__ import annotations
