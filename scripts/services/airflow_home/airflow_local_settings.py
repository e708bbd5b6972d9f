"""Airflow local settings of the SQLite test deployment (scripts/services/airflow-standalone.sh).

Airflow starts a queued DAG run once ``run_after <= now()`` in SQL. On SQLite ``now()`` is
``CURRENT_TIMESTAMP``, which has whole seconds, while ``run_after`` is stored with microseconds:
every run, manual or asset-triggered, waited for the next full second (0.5 s on average) before
it started. ``now()`` on SQLite is compiled with milliseconds here. PostgreSQL (the
docker-compose deployment) has microsecond ``now()`` and does not need this.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import functions


@compiles(functions.now, "sqlite")
def _sqlite_now_with_milliseconds(element: Any, compiler: Any, **kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"
