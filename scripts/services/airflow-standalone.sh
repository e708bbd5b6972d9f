#!/usr/bin/env bash
# A real, running Airflow 3.3 for end-to-end tests: api-server, scheduler, dag-processor and
# triggerer on 127.0.0.1, LocalExecutor on SQLite (or on the PostgreSQL server at
# LCLSTREAM_AIRFLOW_DB_URL), SimpleAuthManager with a known admin.
#
#   scripts/services/airflow-standalone.sh start|stop|status|restart|restart-component C|logs|clean
#
# <home>/config/airflow_local_settings.py (from scripts/services/airflow_home/) makes SQLite's
# now() exact to the millisecond: Airflow starts a DAG run once run_after <= now(), and SQLite's
# whole-second CURRENT_TIMESTAMP delayed every run start by up to a second.
#
# Why SQLite + LocalExecutor: Airflow 3 removed SequentialExecutor and accepts LocalExecutor on
# SQLite (this is what `airflow standalone` runs). Task processes talk to the api-server's
# execution API, not to the database, so the writers are the four components only; the database
# is switched to WAL journaling so readers never block the writer. That carries the tests; it does
# not carry ~20 transfers at once (bench/many_transfers.py: writers waited 60 s for the lock). For
# such loads LCLSTREAM_AIRFLOW_DB_URL points the stack at a PostgreSQL server, e.g. the private one
# of scripts/services/postgres.sh (drivers psycopg2 and asyncpg, in the [dev] extra):
#
#   LCLSTREAM_AIRFLOW_DB_URL=$(scripts/services/postgres.sh url) \
#       scripts/services/airflow-standalone.sh start
#
# `start` is idempotent: a healthy stack started with the same settings is left alone; one started
# with other settings (port, DAGs folder, ...) is restarted. Every start begins from a fresh
# database, copied from a template migrated once per Airflow version (PostgreSQL: `airflow db
# reset`, which drops Airflow's tables and creates them anew), so no DAG runs, pauses or
# import errors survive a restart. `start` waits until GET /api/v2/monitor/health reports the
# metadatabase, scheduler, triggerer and dag_processor healthy and a token can be had from
# POST /auth/token, else stops what it started, prints the log tails and exits 1.
# `stop` ends every process of the sessions it started (pid files; process groups/sessions).
#
# Environment:
#   LCLSTREAM_SERVICES_DIR              state root (default <repo>/.services); AIRFLOW_HOME is
#                                       <root>/airflow-standalone (not the dag.test() home)
#   LCLSTREAM_AIRFLOW_PORT              api-server port on 127.0.0.1 (default 28080); the log
#                                       servers use PORT+1 (worker) and PORT+2 (triggerer)
#   LCLSTREAM_AIRFLOW_DAGS_FOLDER       DAGs folder (default <repo>/dags)
#   LCLSTREAM_AIRFLOW_PLUGINS_FOLDER    plugins folder (default <repo>/plugins)
#   LCLSTREAM_AIRFLOW_USER / _PASSWORD  SimpleAuthManager admin (default admin / admin)
#   LCLSTREAM_AIRFLOW_START_TIMEOUT     seconds to wait for health (default 120)
#   LCLSTREAM_AIRFLOW_PARALLELISM       [core] parallelism (default 8)
#   LCLSTREAM_AIRFLOW_DB_URL            metadata database as a SQLAlchemy URL, e.g.
#                                       postgresql://airflow:PASSWORD@127.0.0.1:25432/airflow
#                                       (`scripts/services/postgres.sh url`; postgresql:// means
#                                       postgresql+psycopg2://); every start resets that
#                                       database. Unset (default): SQLite in <home>/airflow.db
#   LCLSTREAM_PYTHON                    interpreter whose `airflow` to run (default .venv)
#   LCLSTREAM_AIRFLOW_PRELOAD           1 (default): every process pre-imports the provider's
#                                       task modules (airflow_provider_lclstream/warmup.py); 0: not
# AIRFLOW__* variables of the caller are ignored (the tests export some for dag.test()), except
# the provider's own AIRFLOW__LCLSTREAM__* and AIRFLOW_CONN_* (connections), which reach every
# component (a change of them restarts the stack); the rest of the configuration lives in
# <home>/airflow.cfg. <home>/env.sh exports the URL, the credentials,
# AIRFLOW_HOME and AIRFLOW_CONFIG for clients (`source` it).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROOT="${LCLSTREAM_SERVICES_DIR:-$REPO/.services}"
HOME_DIR="$ROOT/airflow-standalone"
PORT="${LCLSTREAM_AIRFLOW_PORT:-28080}"
HOST=127.0.0.1
URL="http://$HOST:$PORT"
DAGS="${LCLSTREAM_AIRFLOW_DAGS_FOLDER:-$REPO/dags}"
PLUGINS="${LCLSTREAM_AIRFLOW_PLUGINS_FOLDER:-$REPO/plugins}"
AF_USER="${LCLSTREAM_AIRFLOW_USER:-admin}"
AF_PASSWORD="${LCLSTREAM_AIRFLOW_PASSWORD:-admin}"
TIMEOUT="${LCLSTREAM_AIRFLOW_START_TIMEOUT:-120}"
PARALLELISM="${LCLSTREAM_AIRFLOW_PARALLELISM:-8}"
PY="${LCLSTREAM_PYTHON:-$REPO/.venv/bin/python}"
AIRFLOW="$(dirname "$PY")/airflow"
COMPONENTS=(api-server scheduler dag-processor triggerer)
RUN="$HOME_DIR/run"
LOGS="$HOME_DIR/logs"
DB="$HOME_DIR/airflow.db"
DB_URL="${LCLSTREAM_AIRFLOW_DB_URL:-}"
# A PostgreSQL URL without a driver gets psycopg2's: SQLAlchemy 2.1 takes psycopg (3), which is
# not installed, for plain postgresql://. (The async engine's URL becomes postgresql+asyncpg.)
if [[ $DB_URL == postgresql://* || $DB_URL == postgres://* ]]; then
    DB_URL="postgresql+psycopg2://${DB_URL#*://}"
fi

# Forget the caller's Airflow settings: only this home's airflow.cfg counts.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep -E '^AIRFLOW__|^_AIRFLOW' | grep -v '^AIRFLOW__LCLSTREAM__' || true)
export AIRFLOW_HOME="$HOME_DIR" AIRFLOW_CONFIG="$HOME_DIR/airflow.cfg"
export PYTHONUNBUFFERED=1

log() { echo "airflow-standalone: $*" >&2; }

pid_of() { cat "$RUN/$1.pid" 2>/dev/null || true; }
# A live process of ours: guards against a stale pid file whose number was reused.
alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null && grep -qa airflow "/proc/$1/cmdline" 2>/dev/null; }

settings() {
    printf 'port=%s\ndags=%s\nplugins=%s\nuser=%s\npassword_sha=%s\nparallelism=%s\npython=%s\n' \
        "$PORT" "$(realpath -m "$DAGS")" "$(realpath -m "$PLUGINS")" "$AF_USER" \
        "$(printf '%s' "$AF_PASSWORD" | sha256sum | cut -c1-16)" "$PARALLELISM" "$PY"
    # provider settings and connections (hashed: connections may hold secrets)
    printf 'env_sha=%s\n' "$(env | grep -E '^(AIRFLOW__LCLSTREAM__|AIRFLOW_CONN_)' | sort | sha256sum | cut -c1-16)"
    # the database URL (hashed: it holds a password); no line for SQLite, as before it existed
    if [[ -n $DB_URL ]]; then printf 'db_sha=%s\n' "$(printf '%s' "$DB_URL" | sha256sum | cut -c1-16)"; fi
    # no line for the default (preload on), as before it existed
    if [[ ${LCLSTREAM_AIRFLOW_PRELOAD:-1} != 1 ]]; then printf 'preload=%s\n' "$LCLSTREAM_AIRFLOW_PRELOAD"; fi
}

# Exit 0 when the health endpoint reports every component healthy; prints the JSON otherwise.
# With a component ($1: scheduler, triggerer, dag_processor) and an epoch time ($2), its latest
# heartbeat must also be later than that time (a restarted component's own, not its
# predecessor's, which stays "healthy" for a while).
healthy() {
    "$PY" - "$URL" "${1:-}" "${2:-}" <<'PY'
import json, sys, urllib.request
from datetime import datetime
try:
    with urllib.request.urlopen(sys.argv[1] + "/api/v2/monitor/health", timeout=5) as r:
        body = json.load(r)
except Exception as err:  # noqa: BLE001 - any failure means "not yet"
    print(f"health endpoint not answering: {err}")
    sys.exit(1)
parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
bad = {p: (body.get(p) or {}).get("status") for p in parts if (body.get(p) or {}).get("status") != "healthy"}
if bad:
    print("not healthy yet: " + json.dumps(bad))
    sys.exit(1)
component, since = sys.argv[2], sys.argv[3]
if component:
    beat = (body.get(component) or {}).get(f"latest_{component}_heartbeat")
    if not beat or datetime.fromisoformat(beat).timestamp() <= float(since):
        print(f"no {component} heartbeat since the restart yet (latest: {beat})")
        sys.exit(1)
PY
}

# Exit 0 when POST /auth/token accepts the configured credentials.
token_ok() {
    LCLSTREAM_AIRFLOW_PASSWORD="$AF_PASSWORD" "$PY" - "$URL" "$AF_USER" <<'PY'
import json, os, sys, urllib.request
body = json.dumps({"username": sys.argv[2], "password": os.environ["LCLSTREAM_AIRFLOW_PASSWORD"]})
req = urllib.request.Request(sys.argv[1] + "/auth/token", data=body.encode(), method="POST",
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        sys.exit(0 if json.load(r).get("access_token") else 1)
except Exception as err:  # noqa: BLE001
    print(f"POST /auth/token failed: {err}")
    sys.exit(1)
PY
}

port_free() {
    "$PY" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

all_alive() {
    local c
    for c in "${COMPONENTS[@]}"; do alive "$(pid_of "$c")" || return 1; done
}

any_alive() {
    local c
    for c in "${COMPONENTS[@]}"; do alive "$(pid_of "$c")" && return 0; done
    return 1
}

tails() {
    local c
    for c in "${COMPONENTS[@]}" migrate; do
        [[ -f "$LOGS/$c.log" ]] || continue
        echo "----- last lines of $LOGS/$c.log -----" >&2
        tail -n "${1:-25}" "$LOGS/$c.log" >&2
    done
}

# Processes whose session id is one of ours (task supervisors, api-server workers, ...).
session_members() {
    local sids="" c p
    for c in "${COMPONENTS[@]}"; do
        p=$(pid_of "$c")
        [[ -n "$p" ]] && sids="$sids $p"
    done
    [[ -n "$sids" ]] || return 0
    ps -eo pid=,sid= | awk -v s="$sids" 'BEGIN{n=split(s,a," "); for(i=1;i<=n;i++) w[a[i]]=1} ($2 in w){print $1}'
}

stop_all() {
    local c p members waited=0
    for c in "${COMPONENTS[@]}"; do
        p=$(pid_of "$c")
        alive "$p" && { kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; }
    done
    while members=$(session_members) && [[ -n "$members" ]] && ((waited < 30)); do
        sleep 0.5
        waited=$((waited + 1))
    done
    members=$(session_members)
    if [[ -n "$members" ]]; then
        log "killing what did not exit on SIGTERM: $(echo "$members" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        kill -KILL $members 2>/dev/null || true
    fi
    for c in "${COMPONENTS[@]}"; do rm -f "$RUN/$c.pid"; done
    rm -f "$RUN/settings"
}

# The [database] section of airflow.cfg.
database_config() {
    if [[ -n $DB_URL ]]; then
        # "%" (a URL-encoded password) must be doubled for configparser's interpolation.
        printf '# LCLSTREAM_AIRFLOW_DB_URL\nsql_alchemy_conn = %s\n' "${DB_URL//%/%%}"
        return
    fi
    cat <<EOF
# SQLite allows one writer: wait up to 60 s for the lock instead of sqlite's 5 s default
# (four components plus task processes write; a 5 s wait was seen to fail under load).
sql_alchemy_conn = sqlite:///$DB?timeout=60
EOF
}

write_config() {
    local jwt secret
    jwt=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(64))')
    secret=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(64))')
    umask 077
    cat > "$AIRFLOW_CONFIG" <<EOF
# Written by scripts/services/airflow-standalone.sh at every start; edits are lost.
[core]
dags_folder = $DAGS
plugins_folder = $PLUGINS
executor = LocalExecutor
parallelism = $PARALLELISM
max_active_tasks_per_dag = $PARALLELISM
load_examples = False
dags_are_paused_at_creation = True
execution_api_server_url = $URL/execution/
auth_manager = airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
simple_auth_manager_users = $AF_USER:admin
simple_auth_manager_passwords_file = $HOME_DIR/passwords.json

[database]
$(database_config)

[api]
host = $HOST
port = $PORT
workers = 1
base_url = $URL
secret_key = $secret

[api_auth]
jwt_secret = $jwt

[logging]
base_log_folder = $LOGS/tasks
worker_log_server_port = $((PORT + 1))
trigger_log_server_port = $((PORT + 2))

[scheduler]
scheduler_heartbeat_sec = 2
scheduler_idle_sleep_time = 0.1

[dag_processor]
refresh_interval = 5
min_file_process_interval = 30
bundle_refresh_check_interval = 2
parsing_processes = 1
print_stats_interval = 300

[triggerer]
capacity = 50

[operators]
# The provider's operators defer their waits (jobs, buffer, consumers) to the triggerer, as the
# project's deployments do; Airflow's own default is False.
default_deferrable = True
EOF
    LCLSTREAM_AIRFLOW_PASSWORD="$AF_PASSWORD" "$PY" - "$HOME_DIR/passwords.json" "$AF_USER" <<'PY'
import json, os, sys
with open(sys.argv[1], "w") as f:
    json.dump({sys.argv[2]: os.environ["LCLSTREAM_AIRFLOW_PASSWORD"]}, f)
PY
    cat > "$HOME_DIR/env.sh" <<EOF
# Source me: clients of the airflow-standalone service (scripts/services/airflow-standalone.sh).
export LCLSTREAM_AIRFLOW_URL='$URL'
export LCLSTREAM_AIRFLOW_USER='$AF_USER'
export LCLSTREAM_AIRFLOW_PASSWORD='${AF_PASSWORD//\'/\'\\\'\'}'
export AIRFLOW_HOME='$HOME_DIR'
export AIRFLOW_CONFIG='$AIRFLOW_CONFIG'
EOF
    umask 022
}

# A fresh database: a copy of the template migrated once per Airflow version; on PostgreSQL
# (LCLSTREAM_AIRFLOW_DB_URL) Airflow's tables dropped and created anew.
fresh_db() {
    local version template
    if [[ -n $DB_URL ]]; then
        log "resetting the metadata database at ${DB_URL%%://*}://...@${DB_URL##*@}"
        if ! "$AIRFLOW" db reset -y > "$LOGS/migrate.log" 2>&1; then
            log "'airflow db reset' failed"
            tail -n 40 "$LOGS/migrate.log" >&2
            return 1
        fi
        return 0
    fi
    version=$("$PY" -c 'from importlib.metadata import version; print(version("apache-airflow"))')
    template="$ROOT/airflow-standalone-template/airflow-$version.db"
    rm -f "$DB" "$DB-wal" "$DB-shm"
    if [[ ! -f "$template" ]]; then
        log "migrating a template database for Airflow $version (first start only)"
        if ! "$AIRFLOW" db migrate > "$LOGS/migrate.log" 2>&1; then
            log "'airflow db migrate' failed"
            tail -n 40 "$LOGS/migrate.log" >&2
            return 1
        fi
        # WAL: readers (api-server, health checks) never wait for the writer; the mode is stored
        # in the file, so every copy inherits it.
        "$PY" - "$DB" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
con.close()
PY
        mkdir -p "$(dirname "$template")"
        cp "$DB" "$template.tmp" && mv "$template.tmp" "$template"
    else
        cp "$template" "$DB"
    fi
}

launch() {
    local c=$1
    shift
    # setsid: each component leads its own session, so `stop` finds all its descendants.
    setsid "$AIRFLOW" "$c" "$@" > "$LOGS/$c.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$c.pid"
}

start() {
    local t0 waited state
    t0=$(date +%s)
    if any_alive; then
        if all_alive && [[ "$(cat "$RUN/settings" 2>/dev/null)" == "$(settings)" ]] && healthy > /dev/null; then
            log "already running at $URL (DAGs: $DAGS)"
            return 0
        fi
        log "running with other settings or partly down: restarting"
        stop_all
    fi
    local p
    for p in "$PORT" $((PORT + 1)) $((PORT + 2)); do
        if ! port_free "$p"; then
            log "port $p on $HOST is taken by another program (this service uses PORT..PORT+2);" \
                "set LCLSTREAM_AIRFLOW_PORT"
            return 1
        fi
    done
    if [[ ! -d "$DAGS" ]]; then
        log "DAGs folder $DAGS does not exist (LCLSTREAM_AIRFLOW_DAGS_FOLDER)"
        return 1
    fi
    mkdir -p "$RUN" "$LOGS" "$PLUGINS" "$HOME_DIR/config"
    rm -f "$LOGS"/*.log
    write_config
    # SQLite's now() has whole seconds: without this every DAG run waits for the next second.
    cp -f "$REPO/scripts/services/airflow_home/airflow_local_settings.py" "$HOME_DIR/config/"
    fresh_db || return 1
    settings > "$RUN/settings"
    launch api-server --host "$HOST" --port "$PORT" --workers 1
    launch scheduler
    launch dag-processor
    launch triggerer
    waited=0
    while true; do
        local c
        for c in "${COMPONENTS[@]}"; do
            if ! alive "$(pid_of "$c")"; then
                log "'airflow $c' exited during start-up"
                tails 40
                stop_all
                return 1
            fi
        done
        if state=$(healthy) && token_ok > /dev/null; then break; fi
        if (($(date +%s) - t0 >= TIMEOUT)); then
            log "not healthy after ${TIMEOUT} s: $state"
            tails 40
            stop_all
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "up in $(($(date +%s) - t0)) s at $URL (DAGs: $DAGS; env: $HOME_DIR/env.sh)"
}

# Restart one component ($1: api-server, scheduler, dag-processor or triggerer) of the running
# stack: end its session (SIGTERM, SIGKILL after 15 s; a scheduler's session holds the
# LocalExecutor's workers and their task processes), start it again with the same settings and
# database, and wait until the stack is healthy with a heartbeat of the new process (api-server:
# a token again). The old log is kept as <component>.log.<epoch>. The fault tests use it.
restart_component() {
    local c=${1:-} p members waited=0 t0 launched state
    case "$c" in
        api-server | scheduler | dag-processor | triggerer) ;;
        *) log "restart-component: unknown component '$c' (${COMPONENTS[*]})"; return 2 ;;
    esac
    if ! all_alive; then
        log "restart-component: the stack is not running (use start)"
        return 1
    fi
    t0=$(date +%s)
    p=$(pid_of "$c")
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    while members=$(ps -eo pid=,sid= | awk -v s="$p" '($2 == s){print $1}') && [[ -n "$members" ]] && ((waited < 30)); do
        sleep 0.5
        waited=$((waited + 1))
    done
    if [[ -n "$members" ]]; then
        log "killing what of $c did not exit on SIGTERM: $(echo "$members" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        kill -KILL $members 2>/dev/null || true
    fi
    [[ -f "$LOGS/$c.log" ]] && mv "$LOGS/$c.log" "$LOGS/$c.log.$t0"
    launched=$(date +%s.%N) # the old process is gone: a heartbeat after this is the new one's
    if [[ $c == api-server ]]; then
        local i
        for ((i = 0; i < 50; i++)); do port_free "$PORT" && break; sleep 0.2; done
        launch api-server --host "$HOST" --port "$PORT" --workers 1
    else
        launch "$c"
    fi
    local health_name=${c//-/_}
    [[ $c == api-server ]] && health_name=""
    while true; do
        if ! alive "$(pid_of "$c")"; then
            log "'airflow $c' exited after the restart"
            tails 40
            return 1
        fi
        if state=$(healthy "$health_name" "$launched") && token_ok > /dev/null; then break; fi
        if (($(date +%s) - t0 >= TIMEOUT)); then
            log "$c not healthy ${TIMEOUT} s after the restart: $state"
            tails 40
            return 1
        fi
        sleep 0.5
    done
    log "restarted $c in $(($(date +%s) - t0)) s (pid $(pid_of "$c"))"
}

status() {
    local c p rc=0
    for c in "${COMPONENTS[@]}"; do
        p=$(pid_of "$c")
        if alive "$p"; then echo "$c: running (pid $p)"; else echo "$c: stopped"; rc=1; fi
    done
    if ((rc == 0)); then
        if healthy > /dev/null; then echo "health: ok ($URL)"; else echo "health: $(healthy)"; rc=1; fi
    fi
    return $rc
}

case "${1:-}" in
    start) start ;;
    stop)
        if any_alive || [[ -n "$(session_members)" ]]; then stop_all; log "stopped"; else log "not running"; fi
        ;;
    restart) stop_all; start ;;
    restart-component) restart_component "${2:-}" ;;
    status) status ;;
    logs) tails "${2:-50}" 2>&1 ;;
    clean) stop_all; rm -rf "$HOME_DIR" "$ROOT/airflow-standalone-template"; log "removed $HOME_DIR" ;;
    *) echo "usage: $0 start|stop|status|restart|restart-component COMPONENT|logs [N]|clean" >&2; exit 2 ;;
esac
