"""Airflow local settings of the SQLite test deployment (scripts/services/airflow-standalone.sh).

Airflow starts a queued DAG run once ``run_after <= now()`` in SQL. On SQLite ``now()`` is
``CURRENT_TIMESTAMP``, which has whole seconds, while ``run_after`` is stored with microseconds:
every run, manual or asset-triggered, waited for the next full second (0.5 s on average) before
it started. ``now()`` on SQLite is compiled with milliseconds here. PostgreSQL (the
docker-compose deployment) has microsecond ``now()`` and does not need this.

Every process also pre-imports the modules of the provider's tasks
(``airflow_provider_lclstream.warmup``): the LocalExecutor's workers and their task processes
are forked from the scheduler and inherit them, so no task on a run start's critical path pays
them. ``LCLSTREAM_AIRFLOW_PRELOAD=0`` in the stack's environment turns it off.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import functions


@compiles(functions.now, "sqlite")
def _sqlite_now_with_milliseconds(element: Any, compiler: Any, **kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


if os.environ.get("LCLSTREAM_AIRFLOW_PRELOAD", "1") != "0":
    from airflow_provider_lclstream.warmup import preload

    preload()
