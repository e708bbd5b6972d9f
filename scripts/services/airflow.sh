#!/usr/bin/env bash
# Airflow 3.3 for the tests: a temporary AIRFLOW_HOME with a migrated SQLite database.
# Usage: scripts/services/airflow.sh start|stop|status   (idempotent)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${LCLSTREAM_SERVICES_DIR:-$REPO/.services}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$STATE/airflow}
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# The test-only key tests/conftest.py uses too (this home holds no real secret).
export AIRFLOW__CORE__FERNET_KEY=${AIRFLOW__CORE__FERNET_KEY:-lTpKL4byaE_NjdDMHOZ-qn2doUyI7fpxHLib6CWWggY=}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$REPO/dags}
PY=${LCLSTREAM_PYTHON:-$REPO/.venv/bin/python}
AIRFLOW=$(dirname "$PY")/airflow

migrated() { [ -f "$AIRFLOW_HOME/.migrated" ] && [ -f "$AIRFLOW_HOME/airflow.db" ]; }

case "${1:-}" in
  start)
    if migrated; then echo "airflow: database ready in $AIRFLOW_HOME"; exit 0; fi
    mkdir -p "$AIRFLOW_HOME"
    t0=$(date +%s)
    if ! "$AIRFLOW" db migrate > "$AIRFLOW_HOME/migrate.log" 2>&1; then
      echo "airflow: 'airflow db migrate' failed:" >&2; tail -30 "$AIRFLOW_HOME/migrate.log" >&2; exit 1
    fi
    touch "$AIRFLOW_HOME/.migrated"
    echo "airflow: database migrated in $(( $(date +%s) - t0 )) s ($AIRFLOW_HOME)"
    ;;
  status)
    migrated ;;
  stop)
    rm -rf "$AIRFLOW_HOME"; echo "airflow: removed $AIRFLOW_HOME" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
