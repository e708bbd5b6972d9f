#!/usr/bin/env bash
# A private PostgreSQL server for the metadata database of a standalone Airflow under load.
#
#   scripts/services/postgres.sh start|stop|restart|status|env|url|logs [N]|purge
#
# SQLite (airflow-standalone.sh's default) has one writer: with ~20 transfers in flight its
# writers waited 60 s for the lock. bench/many_transfers.py --postgres runs its stack on this:
#
#   LCLSTREAM_AIRFLOW_DB_URL=$(scripts/services/postgres.sh url) \
#       scripts/services/airflow-standalone.sh start
#
# One cluster per services dir, of its own: initdb'd on the first start (no system cluster is
# used or touched), listening on 127.0.0.1:PORT only and on a unix socket in <state>/run. It holds
# the role and database "airflow" (password: $LCLSTREAM_POSTGRES_PASSWORD, else a random one made
# on the first start and kept, mode 0600, in <state>/password). `start` is idempotent: a server of
# this services dir that answers on PORT is left alone; one on another port is restarted. `url`
# prints postgresql://airflow:PASSWORD@127.0.0.1:PORT/airflow (libpq's and SQLAlchemy's form;
# SQLAlchemy 2.1 reads it as psycopg 3, so airflow-standalone.sh makes it postgresql+psycopg2);
# `env` prints <state>/env.sh (`source` it), which exports it as LCLSTREAM_POSTGRES_URL. `stop`
# is `pg_ctl stop -m fast`; `purge` stops and removes the cluster.
#
# The files live in ${LCLSTREAM_POSTGRES_STATE_ROOT:-/var/lib/lclstream-services}/<hash of the
# services dir>/postgres (as slurm.sh's): as root the server runs as the OS user postgres, which
# cannot reach a checkout under a private (0700) directory. <services dir>/postgres links there.
# max_connections is 300: every Airflow component and task process holds a pool of its own.
# As root the Debian package `postgresql` is installed when no server binaries are found.
#
# Environment:
#   LCLSTREAM_SERVICES_DIR             services dir (default <repo>/.services)
#   LCLSTREAM_POSTGRES_PORT            TCP port on 127.0.0.1 (default 25432)
#   LCLSTREAM_POSTGRES_PASSWORD        the airflow role's password (default: generated, kept)
#   LCLSTREAM_POSTGRES_MAX_CONNECTIONS max_connections (default 300)
#   LCLSTREAM_POSTGRES_STATE_ROOT      where the cluster lives (default /var/lib/lclstream-services)
#   LCLSTREAM_POSTGRES_BINDIR          initdb/pg_ctl/postgres folder (default: pg_config --bindir,
#                                      else the newest /usr/lib/postgresql/*/bin, else PATH)
#   LCLSTREAM_POSTGRES_START_TIMEOUT   seconds to wait for the server (default 60)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SERVICES_DIR="${LCLSTREAM_SERVICES_DIR:-$REPO/.services}"
mkdir -p "$SERVICES_DIR"
SERVICES_DIR="$(cd "$SERVICES_DIR" && pwd -P)"
LINK="$SERVICES_DIR/postgres"
STATE_ROOT="${LCLSTREAM_POSTGRES_STATE_ROOT:-/var/lib/lclstream-services}"
STATE_KEY="$(printf '%s' "$SERVICES_DIR" | sha256sum | cut -c1-16)"
STATE="$STATE_ROOT/$STATE_KEY/postgres"
DATA="$STATE/data"
SOCKET_DIR="$STATE/run"
LOGFILE="$STATE/log/postgres.log"
HOST=127.0.0.1
PORT="${LCLSTREAM_POSTGRES_PORT:-25432}"
MAX_CONNECTIONS="${LCLSTREAM_POSTGRES_MAX_CONNECTIONS:-300}"
TIMEOUT="${LCLSTREAM_POSTGRES_START_TIMEOUT:-60}"
DB_NAME=airflow
DB_USER=airflow
# As root the server runs as the OS user postgres (it refuses root); otherwise as the caller.
if [[ $EUID -eq 0 ]]; then PG_OS_USER=postgres; else PG_OS_USER="$(id -un)"; fi

log() { echo "postgres.sh: $*" >&2; }
die() {
    log "$*"
    if [[ -s $LOGFILE ]]; then
        echo "----- tail $LOGFILE" >&2
        tail -n 25 "$LOGFILE" >&2 || true
    fi
    exit 1
}

# --- binaries ----------------------------------------------------------------------------------

# Print the folder holding initdb, pg_ctl, postgres and psql, else fail.
bindir() {
    local d candidates=()
    [[ -n ${LCLSTREAM_POSTGRES_BINDIR:-} ]] && candidates+=("$LCLSTREAM_POSTGRES_BINDIR")
    command -v pg_config >/dev/null 2>&1 && candidates+=("$(pg_config --bindir 2>/dev/null || true)")
    # Debian's layout, newest major version first.
    while IFS= read -r d; do candidates+=("$d"); done < <(
        compgen -G '/usr/lib/postgresql/*/bin' | sort -t/ -k5,5Vr || true
    )
    command -v initdb >/dev/null 2>&1 && candidates+=("$(dirname "$(readlink -f "$(command -v initdb)")")")
    for d in "${candidates[@]}"; do
        [[ -n $d && -x $d/initdb && -x $d/pg_ctl && -x $d/postgres && -x $d/psql &&
            -x $d/pg_isready ]] && {
            echo "$d"
            return 0
        }
    done
    return 1
}

ensure_packages() {
    BIN="$(bindir)" && return 0
    [[ $EUID -eq 0 ]] || die "no PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) and not" \
        "root: apt-get install -y postgresql, or set LCLSTREAM_POSTGRES_BINDIR"
    command -v apt-get >/dev/null || die "no PostgreSQL server binaries and no apt-get: install" \
        "PostgreSQL and set LCLSTREAM_POSTGRES_BINDIR"
    log "installing the Debian package postgresql"
    # Keep the package's postinst from starting the system cluster (it would take port 5432).
    local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=1
    fi
    { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; } ||
        rc=$?
    ((own_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install postgresql failed (rc=$rc)"
    BIN="$(bindir)" || die "postgresql installed but initdb/pg_ctl/postgres/psql still not found"
}

# Run a PostgreSQL program as $PG_OS_USER, from / (the caller's directory may be private to it).
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && exec runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd / && exec "$@")
    fi
}

# --- state -------------------------------------------------------------------------------------

make_state_dir() {
    [[ -d $STATE_ROOT ]] || mkdir -p -m 0755 "$STATE_ROOT"
    mkdir -p "$STATE" "$DATA" "$SOCKET_DIR" "$(dirname "$LOGFILE")"
    chmod 0755 "$STATE_ROOT/$STATE_KEY" "$STATE"
    echo "$SERVICES_DIR" >"$STATE_ROOT/$STATE_KEY/services-dir" # whose state this is
    chown "$PG_OS_USER" "$DATA" "$SOCKET_DIR" "$(dirname "$LOGFILE")"
    chmod 0700 "$DATA"
    chmod 0755 "$SOCKET_DIR"
    ln -sfn "$STATE" "$LINK"
}

# The airflow role's password: $LCLSTREAM_POSTGRES_PASSWORD, else one kept in $STATE (0600).
password() {
    if [[ -n ${LCLSTREAM_POSTGRES_PASSWORD:-} ]]; then
        printf '%s' "$LCLSTREAM_POSTGRES_PASSWORD"
        return
    fi
    if [[ ! -s $STATE/password ]]; then
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$STATE/password")
    fi
    cat "$STATE/password"
}

# Percent-encode $1 for the userinfo part of a URL.
urlencode() {
    local LC_ALL=C s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
        [a-zA-Z0-9.~_-]) out+=$c ;;
        *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

url() { printf 'postgresql://%s:%s@%s:%s/%s' "$DB_USER" "$(urlencode "$(password)")" "$HOST" "$PORT" "$DB_NAME"; }

write_env() {
    local file="$STATE/env.sh"
    rm -f "$file"
    (umask 077 && : >"$file") # holds the password: owner only
    cat >"$file" <<EOF
# Source me: the PostgreSQL of scripts/services/postgres.sh (services dir $SERVICES_DIR).
export LCLSTREAM_POSTGRES_URL='$(url)'
export LCLSTREAM_POSTGRES_HOST=$HOST
export LCLSTREAM_POSTGRES_PORT=$PORT
export LCLSTREAM_POSTGRES_SOCKET_DIR=$SOCKET_DIR
export LCLSTREAM_POSTGRES_STATE_DIR=$STATE
EOF
}

# --- server ------------------------------------------------------------------------------------

# Print the pid of this services dir's postmaster when it runs, else fail.
server_pid() {
    local pid
    [[ -f $DATA/postmaster.pid ]] || return 1
    pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres* ]] || return 1 # a recycled pid
    echo "$pid"
}

# The port the running server was started with (line 4 of postmaster.pid).
server_port() { sed -n 4p "$DATA/postmaster.pid" 2>/dev/null; }

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

ready() { "$BIN/pg_isready" -q -h "$HOST" -p "$PORT" -t 5 >/dev/null 2>&1; }

# Run SQL from stdin as the cluster's superuser, over the unix socket.
psql_super() {
    as_pg "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -U "$PG_OS_USER" \
        -d postgres "$@"
}

sql_literal() { printf "'%s'" "${1//\'/\'\'}"; }

init_cluster() {
    [[ -f $DATA/PG_VERSION ]] && return 0
    # No PG_VERSION: nothing usable there (an initdb that failed half-way); start afresh.
    find "$DATA" -mindepth 1 -delete
    log "initdb $DATA ($("$BIN/postgres" --version))"
    # Peer auth on the socket (the superuser is the OS user), passwords over TCP.
    as_pg "$BIN/initdb" -D "$DATA" -U "$PG_OS_USER" -E UTF8 --no-locale \
        --auth-local=peer --auth-host=scram-sha-256 >"$STATE/initdb.log" 2>&1 ||
        { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
    echo "include_if_exists = 'lclstream.conf'" >>"$DATA/postgresql.conf"
}

write_config() {
    cat >"$DATA/lclstream.conf" <<EOF
# Written by scripts/services/postgres.sh at every start; edits are lost.
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$SOCKET_DIR'
max_connections = $MAX_CONNECTIONS
log_line_prefix = '%m [%p] %u@%d '
EOF
    chown "$PG_OS_USER" "$DATA/lclstream.conf"
    chmod 0600 "$DATA/lclstream.conf"
}

# The role and database "airflow"; the role's password is set again at every start.
ensure_database() {
    local exists
    psql_super <<EOF || die "could not create the role $DB_USER"
SET log_statement = 'none';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN CREATE ROLE $DB_USER LOGIN; END IF;
END \$\$;
ALTER ROLE $DB_USER WITH LOGIN PASSWORD $(sql_literal "$(password)");
EOF
    exists=$(psql_super -tA -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ||
        die "could not list the databases"
    if [[ $exists != 1 ]]; then
        psql_super -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null ||
            die "could not create the database $DB_NAME"
    fi
}

start() {
    ensure_packages
    local pid
    if pid=$(server_pid); then
        if [[ $(server_port) == "$PORT" ]] && ready; then
            write_env
            log "already running on $HOST:$PORT (pid $pid; source $STATE/env.sh)"
            return 0
        fi
        log "running on port $(server_port), not $PORT, or not answering: restarting"
        stop
    fi
    port_open "$PORT" && die "port $PORT on $HOST is taken, not by this services dir's PostgreSQL" \
        "(state: $STATE); set LCLSTREAM_POSTGRES_PORT"
    local t0=$SECONDS
    init_cluster
    write_config
    [[ -f $LOGFILE ]] || { : >"$LOGFILE" && chown "$PG_OS_USER" "$LOGFILE"; }
    # pg_ctl detaches the server (setsid, stdio to the log); it must not inherit our lock (fd 9).
    as_pg "$BIN/pg_ctl" start -D "$DATA" -l "$LOGFILE" -w -t "$TIMEOUT" >/dev/null 9>&- ||
        die "pg_ctl start failed"
    ensure_database
    write_env
    log "up in $((SECONDS - t0)) s on $HOST:$PORT (pid $(server_pid || echo '?'); source $STATE/env.sh)"
}

stop() {
    local pid
    if ! pid=$(server_pid); then
        log "not running"
        return 0
    fi
    BIN="$(bindir)" || die "PostgreSQL binaries not found (needed to stop pid $pid)"
    if ! as_pg "$BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >/dev/null; then
        log "fast shutdown of pid $pid did not finish in 60 s: immediate shutdown"
        as_pg "$BIN/pg_ctl" stop -D "$DATA" -m immediate -w -t 30 >/dev/null || true
    fi
    if server_pid >/dev/null; then die "postgres (pid $pid) still running"; fi
    log "stopped (pid $pid)"
}

status() {
    local pid
    if ! pid=$(server_pid); then
        echo "postgres: not running (state: $STATE)"
        return 1
    fi
    BIN="$(bindir)" || { echo "postgres: running (pid $pid), but no binaries to check it"; return 1; }
    if [[ $(server_port) != "$PORT" ]]; then
        echo "postgres: running (pid $pid) on port $(server_port), not $PORT"
        return 1
    fi
    if ! ready; then
        echo "postgres: running (pid $pid), not accepting connections on $HOST:$PORT"
        return 1
    fi
    echo "postgres: running on $HOST:$PORT (pid $pid), socket dir $SOCKET_DIR, database $DB_NAME"
}

# Stop, then remove the cluster and the link to it.
purge() {
    stop
    rm -rf "${STATE:?}"
    # The folder of this services dir, when nothing else (slurm.sh's state) is left in it.
    if [[ -z $(ls -A "$STATE_ROOT/$STATE_KEY" 2>/dev/null | grep -vx services-dir) ]]; then
        rm -rf "${STATE_ROOT:?}/${STATE_KEY:?}"
    fi
    log "removed $STATE"
}

# Serialize start/stop/purge of one cluster (parallel test runs).
lock() {
    make_state_dir
    exec 9>"$STATE/lock"
    flock -w 300 9 || die "could not lock $STATE/lock"
}

case "${1:-}" in
start) lock && start ;;
stop)
    if [[ -d $STATE ]]; then lock && stop; else log "not running (no state at $STATE)"; fi
    ;;
restart) lock && stop && start ;;
status) status ;;
env)
    [[ -f $STATE/env.sh ]] || die "no $STATE/env.sh: run start first"
    cat "$STATE/env.sh"
    ;;
url)
    [[ -d $STATE ]] || die "no cluster at $STATE: run start first"
    url && echo
    ;;
logs) tail -n "${2:-50}" "$LOGFILE" ;;
purge)
    if [[ -d $STATE ]]; then lock && purge; else log "nothing to purge at $STATE"; fi
    if [[ -L $LINK ]]; then rm -f "$LINK"; fi
    ;;
*)
    echo "usage: $0 start|stop|restart|status|env|url|logs [N]|purge" >&2
    exit 2
    ;;
esac
