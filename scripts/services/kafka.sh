#!/usr/bin/env bash
# Single-node Apache Kafka KRaft broker (broker + controller in one JVM) for the test suite.
#
#   scripts/services/kafka.sh start|stop|status|restart|logs
#
# The jars come from Maven Central (scripts/services/kafka/pom.xml, `mvn dependency:
# copy-dependencies`) and are cached under $LCLSTREAM_SERVICES_DIR/kafka/libs-<version>, so only
# the first start downloads. `start` is idempotent: a broker that already answers is left alone.
#
# Environment:
#   LCLSTREAM_SERVICES_DIR        state root (default <repo>/.services)
#   LCLSTREAM_KAFKA_PORT          PLAINTEXT listener on 127.0.0.1 (default 19092)
#   LCLSTREAM_KAFKA_CONTROLLER_PORT  KRaft controller listener (default PORT+1)
#   LCLSTREAM_KAFKA_SASL_PORT     SASL_PLAINTEXT (mechanism PLAIN) listener (default PORT+2)
#   LCLSTREAM_KAFKA_SASL_USER     its one user (default lclstream)
#   LCLSTREAM_KAFKA_SASL_PASSWORD its password (default: a random one made on first start and
#                                 kept, mode 0600, in <state>/kafka/broker-PORT/sasl-password)
#   LCLSTREAM_KAFKA_VERSION       org.apache.kafka:kafka_2.13 release (default 4.1.1)
#   LCLSTREAM_KAFKA_START_TIMEOUT seconds to wait for the broker to answer (default 90)
#   LCLSTREAM_KAFKA_HEAP          JVM heap options (default "-Xms128m -Xmx512m")
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
POM="$REPO/scripts/services/kafka/pom.xml"
BASE="${LCLSTREAM_SERVICES_DIR:-$REPO/.services}/kafka"
PORT="${LCLSTREAM_KAFKA_PORT:-19092}"
CPORT="${LCLSTREAM_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
SASL_PORT="${LCLSTREAM_KAFKA_SASL_PORT:-$((PORT + 2))}"
SASL_USER="${LCLSTREAM_KAFKA_SASL_USER:-lclstream}"
VERSION="${LCLSTREAM_KAFKA_VERSION:-4.1.1}"
TIMEOUT="${LCLSTREAM_KAFKA_START_TIMEOUT:-90}"
HEAP="${LCLSTREAM_KAFKA_HEAP:--Xms128m -Xmx512m}"
LIBS="$BASE/libs-$VERSION"
INST="$BASE/broker-$PORT"
PIDFILE="$INST/kafka.pid"
LOG="$INST/kafka.log"
BOOTSTRAP="127.0.0.1:$PORT"

log() { echo "kafka.sh: $*" >&2; }

python_bin() {
    if [[ -x "$REPO/.venv/bin/python" ]]; then echo "$REPO/.venv/bin/python"; else echo python3; fi
}

# Exit 0 when a Kafka broker on 127.0.0.1:$1 answers a Metadata request listing >= 1 broker.
# Pure standard library (ApiVersions v0, then a non-flexible Metadata version), so it works
# with or without kafka-python.
probe() {
    "$(python_bin)" - "$1" <<'PY'
import socket, struct, sys

def call(sock, api_key, version, corr, body):
    client = b"kafka.sh-probe"
    msg = struct.pack(">hhih", api_key, version, corr, len(client)) + client + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", recv(sock, 4))[0]
    data = recv(sock, size)
    if struct.unpack(">i", data[:4])[0] != corr:
        raise SystemExit("correlation id mismatch")
    return data[4:]

def recv(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise SystemExit("connection closed")
        buf += chunk
    return buf

try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3) as s:
        s.settimeout(5)
        data = call(s, 18, 0, 1, b"")  # ApiVersions v0
        error, count = struct.unpack(">hi", data[:6])
        if error:
            raise SystemExit(f"ApiVersions error {error}")
        ranges = {k: (lo, hi) for k, lo, hi in
                  (struct.unpack(">hhh", data[6 + 6 * i: 12 + 6 * i]) for i in range(count))}
        lo, hi = ranges[3]  # Metadata
        version = max(lo, 1)
        if version > min(hi, 8):
            raise SystemExit(f"no non-flexible Metadata version in {lo}..{hi}")
        body = struct.pack(">i", 0) + (b"\x00" if version >= 4 else b"")  # no topics
        data = call(s, 3, version, 2, body)
        offset = 4 if version >= 3 else 0  # throttle_time_ms
        brokers = struct.unpack(">i", data[offset:offset + 4])[0]
        raise SystemExit(0 if brokers >= 1 else "no brokers registered yet")
except (OSError, KeyError, struct.error) as err:
    raise SystemExit(f"{type(err).__name__}: {err}")
PY
}

running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

fetch_libs() {
    [[ -f "$LIBS/.complete" ]] && return 0
    command -v mvn >/dev/null || { log "mvn not found (apt-get install maven)"; return 1; }
    command -v java >/dev/null || { log "java not found (Kafka 4 needs Java 17+)"; return 1; }
    log "downloading Kafka $VERSION jars from Maven Central into $LIBS (first start only)"
    local tmp="$LIBS.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # A fresh local repository, for a cold-start measurement: MAVEN_OPTS=-Dmaven.repo.local=DIR
    if ! mvn -B -Dstyle.color=never -f "$POM" -Dkafka.version="$VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        >"$BASE/mvn.log" 2>&1; then
        rm -rf "$tmp"
        grep -E "ERROR|BUILD" "$BASE/mvn.log" | tail -n 20 >&2 || tail -n 20 "$BASE/mvn.log" >&2
        log "**************************************************************************"
        log "* FAILED to fetch org.apache.kafka:kafka_2.13:$VERSION from Maven Central. *"
        log "* No Kafka broker is available; nothing was substituted for it.           *"
        log "**************************************************************************"
        return 1
    fi
    touch "$tmp/.complete"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
}

# The SASL user's password: $LCLSTREAM_KAFKA_SASL_PASSWORD, else one kept in $INST (0600).
sasl_password() {
    if [[ -n "${LCLSTREAM_KAFKA_SASL_PASSWORD:-}" ]]; then
        printf '%s' "$LCLSTREAM_KAFKA_SASL_PASSWORD"
        return
    fi
    mkdir -p "$INST"
    if [[ ! -s "$INST/sasl-password" ]]; then
        (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$INST/sasl-password")
    fi
    cat "$INST/sasl-password"
}

write_config() {
    mkdir -p "$INST/data"
    local password
    password="$(sasl_password)"
    rm -f "$INST/server.properties"
    (umask 077; : >"$INST/server.properties")  # holds the SASL password: owner only
    cat >"$INST/server.properties" <<EOF
# Written by scripts/services/kafka.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$SASL_USER" password="$password" user_$SASL_USER="$password";
log.dirs=$INST/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
num.network.threads=2
num.io.threads=2
EOF
    cat >"$INST/log4j2.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

java_args() {
    local heap
    read -r -a heap <<<"$HEAP"
    JAVA=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$INST/log4j2.properties" -cp "$LIBS/*")
}

java_cmd() {
    java_args
    "${JAVA[@]}" "$@"
}

format_storage() {
    [[ -f "$INST/data/meta.properties" ]] && return 0
    local cluster_id
    cluster_id="$(java_cmd kafka.tools.StorageTool random-uuid 2>>"$LOG" | tail -n 1)"
    log "formatting $INST/data (cluster id $cluster_id)"
    java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$INST/server.properties" \
        >>"$LOG" 2>&1 || { log "storage format failed:"; tail -n 30 "$LOG" >&2; return 1; }
}

wait_ready() {
    local pid="$1" deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if probe "$PORT" 2>/dev/null; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "broker process $pid exited during startup; last lines of $LOG:"
            tail -n 40 "$LOG" >&2
            return 1
        fi
        sleep 0.5
    done
    log "broker did not answer on $BOOTSTRAP within ${TIMEOUT}s; last lines of $LOG:"
    tail -n 40 "$LOG" >&2
    return 1
}

sasl_listening() {
    (echo >"/dev/tcp/127.0.0.1/$SASL_PORT") 2>/dev/null
}

start() {
    if probe "$PORT" 2>/dev/null; then
        if sasl_listening; then
            log "already running on $BOOTSTRAP (SASL_PLAINTEXT on 127.0.0.1:$SASL_PORT)"
            return 0
        fi
        log "running without the SASL listener (an older config): restarting to add it"
        stop
    fi
    local pid
    if pid="$(running_pid)"; then
        log "broker process $pid is starting; waiting for it"
        if wait_ready "$pid"; then echo "$BOOTSTRAP"; return 0; fi
        stop
    fi
    if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        log "port $PORT is taken by something that is not a Kafka broker; set LCLSTREAM_KAFKA_PORT"
        return 1
    fi
    fetch_libs
    write_config
    : >"$LOG"
    format_storage
    log "starting Kafka $VERSION on $BOOTSTRAP (controller 127.0.0.1:$CPORT), log $LOG"
    # setsid + closed stdio: the broker outlives this script and holds no caller's pipes.
    java_args
    setsid "${JAVA[@]}" kafka.Kafka "$INST/server.properties" </dev/null >>"$LOG" 2>&1 9>&- &
    echo $! >"$PIDFILE"
    pid="$(cat "$PIDFILE")"
    wait_ready "$pid" || { stop; return 1; }
    for _ in $(seq 1 40); do sasl_listening && break; sleep 0.25; done
    log "ready after ${SECONDS}s (pid $pid); SASL_PLAINTEXT/PLAIN on 127.0.0.1:$SASL_PORT"
    echo "$BOOTSTRAP"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        log "not running (no live pid in $PIDFILE)"
        return 0
    fi
    log "stopping broker $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "broker $pid ignored SIGTERM for 30s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
}

status() {
    local why
    if why="$(probe "$PORT" 2>&1)"; then
        echo "kafka: running on $BOOTSTRAP (pid $(running_pid || echo '?'))"
        if ! sasl_listening; then
            echo "kafka: no SASL listener on 127.0.0.1:$SASL_PORT (start restarts it with one)"
            return 1
        fi
        echo "kafka: SASL_PLAINTEXT/PLAIN on 127.0.0.1:$SASL_PORT, user $SASL_USER"
        return 0
    fi
    echo "kafka: not answering on $BOOTSTRAP (${why:-no answer})"
    return 1
}

# Serialize start/stop of one instance (parallel test runs); the broker must not inherit fd 9.
lock() {
    mkdir -p "$INST"
    exec 9>"$INST/lock"
    flock -w 600 9 || { log "could not lock $INST/lock"; exit 1; }
}

case "${1:-}" in
    start) lock; start ;;
    stop) lock; stop ;;
    restart) lock; stop; start ;;
    status) status ;;
    logs) tail -n "${2:-100}" "$LOG" ;;
    sasl-password) lock; sasl_password; echo ;;
    *) echo "usage: $0 start|stop|status|restart|logs [N]|sasl-password" >&2; exit 2 ;;
esac
