"""Time from a run start to the first file written by the consumer, on real services.

Starts (or reuses) Kafka, the single-node SLURM and a running Airflow 3.3 with our DAGs; then,
RUNS times each: (1) produce an Elog ``runs`` Create message to Kafka -> ``lclstream_on_run_start``
-> ``lclstream_transfer`` on SLURM; (2) trigger ``lclstream_transfer`` through the REST API v2.
Each measures the seconds from the message (or API call) to the first HDF5 file of that run's
consumer. Before the clock starts, ``--warmup`` (1) untimed transfers on the Kafka path let the
LocalExecutor's workers import the task runner once (about 3-4 s on a worker's first task), as
they have in a deployment that has run a transfer since it started; and every Airflow process
pre-imports the provider's task modules (``airflow_provider_lclstream/warmup.py``; ``preload=``
in the output, ``LCLSTREAM_AIRFLOW_PRELOAD=0`` turns it off). Ends with a ``warm-up: N
untimed run(s)`` line and one ``key=value`` line (p50 and max of both).

``--postgres``: Airflow's metadata database on a PostgreSQL server of its own, as in the
docker-compose deployment (``db=`` in the output).

``--warm``: a warm streamer pool (``dags/lclstream_warm_pool.py``, size 1, 2 ranks on SLURM)
serves the transfers. Before each timed transfer (untimed) the pool DAG runs its health check
and waits until a standby job is ready, as a deployment keeps its pool between run starts. The
line then adds ``warm_p50_s`` (the transfers that ran in a claimed standby job, Kafka and API
together) and ``warm_runs=CLAIMED/ALL``.

``--warm-buffer``: a warm buffer pool too (``role: buffer``, size 1 on SLURM): ``start_buffer``
claims a standby ``lclstream-buffer`` instead of submitting one. The line adds
``warm_buffer_runs=CLAIMED/ALL`` (XCom ``warm_buffer`` of ``start_buffer``).
``--warm-consumer``: a warm consumer pool too (``role: consumer``): ``start_consumers`` claims a
standby ``lclstream-receive``; the line adds ``warm_consumer_runs=CLAIMED/ALL``.

With any pool, the line adds ``prestart_runs=PRESTARTED/KAFKA_RUNS``: the Kafka-path transfers
whose jobs ``lclstream_on_run_start`` claimed before it triggered the transfer (XCom
``prestart`` of ``start_transfer``; ``operators/prestart.py``). ``--no-prestart`` turns that off
(``[lclstream] prestart = False``), for an A/B in one hour.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kafka import KafkaProducer  # noqa: E402

from tests.airflow_api import AirflowApi  # noqa: E402
from tests.integration.test_transfer_e2e import (  # noqa: E402
    ensure_topics,
    produce_run_start,
    wait_for_group_member,
)
from tests.psana_data import write_xtc2  # noqa: E402
from tests.standalone import standalone_env  # noqa: E402

STATE = Path(os.environ.get("LCLSTREAM_SERVICES_DIR", REPO / ".services"))  # as tests/conftest.py
RUNS = 5
KAFKA = "127.0.0.1:19092"


def service(name: str, action: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["bash", str(REPO / f"scripts/services/{name}.sh"), action],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{name} {action} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def first_file_after(directory: Path, since: float, timeout: float = 300) -> float:
    """Wall-clock seconds from ``since`` to the first .h5 file written after it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        stamps = [f.stat().st_mtime for f in directory.rglob("*.h5") if f.stat().st_mtime >= since]
        if stamps:
            return min(stamps) - since
        time.sleep(0.05)
    raise SystemExit(f"no file in {directory} within {timeout} s")


def stamp(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def timeline(api: AirflowApi, dag_id: str, run_id: str, since: float) -> str:
    """When the run and each task were queued, started and ended, in seconds after ``since``."""

    def rel(value: str | None) -> str:
        moment = stamp(value)
        return "-" if moment is None else f"{moment - since:.2f}"

    run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
    parts = [f"{dag_id}: queued {rel(run.get('queued_at'))} started {rel(run.get('start_date'))}"]
    tis = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    for ti in sorted(tis, key=lambda t: stamp(t.get("start_date")) or float("inf")):
        parts.append(
            f"  {ti['task_id']}[{ti.get('map_index', -1)}]: queued {rel(ti.get('queued_when'))} "
            f"start {rel(ti.get('start_date'))} end {rel(ti.get('end_date'))}"
        )
    return "\n".join(parts)


def wait_finished(
    api: AirflowApi,
    known: set[str],
    since: float,
    show: bool,
    warm: list[bool] | None = None,
    warm_buffer: list[bool] | None = None,
    warm_consumer: list[bool] | None = None,
) -> set[str]:
    """Wait for the new transfer run to succeed; with ``warm``, append whether its streamer ran
    in a claimed standby job (XCom ``warm_streamer`` of ``run_streamer``); with
    ``warm_buffer``, whether its buffer did (``warm_buffer`` of ``start_buffer``)."""
    run_id = api.wait_for_new_run("lclstream_transfer", known, timeout=120)
    state = api.wait_for_run("lclstream_transfer", run_id, timeout=300)
    if state != "success":
        raise SystemExit(f"transfer {run_id} {state}: {api.tasks('lclstream_transfer', run_id)}")
    if show:
        print(timeline(api, "lclstream_transfer", run_id, since))
    if warm is not None:
        try:
            warm.append(api.xcom("lclstream_transfer", run_id, "run_streamer", "warm_streamer"))
        except Exception:  # no such XCom: a fresh job
            warm.append(False)
    if warm_buffer is not None:
        try:
            claimed = api.xcom("lclstream_transfer", run_id, "start_buffer", "warm_buffer")
            warm_buffer.append(bool(claimed))
        except Exception:  # no such XCom: a fresh job
            warm_buffer.append(False)
    if warm_consumer is not None:
        try:
            claimed = api.xcom("lclstream_transfer", run_id, "start_consumers", "warm_consumers")
            warm_consumer.append(bool(claimed))
        except Exception:  # no such XCom: fresh jobs
            warm_consumer.append(False)
    return known | {run_id}


POOL_CONF = {"pool": "default", "streamer_backend": "slurm", "ranks": 2, "size": 1,
             "idle_timeout_s": 900, "wait_ready_s": 60}  # fmt: skip


BUFFER_POOL_CONF = {**POOL_CONF, "pool": "buffers", "role": "buffer"}
CONSUMER_POOL_CONF = {**POOL_CONF, "pool": "consumers", "role": "consumer"}


def was_prestarted(api: AirflowApi, hop_run_id: str) -> bool:
    """Whether ``lclstream_on_run_start``'s run claimed its transfer's jobs (XCom ``prestart``)."""
    try:
        record = api.xcom("lclstream_on_run_start", hop_run_id, "start_transfer", "prestart")
    except Exception:  # no such XCom: not prestarted
        return False
    return bool(record)


def keep_warm(
    api: AirflowApi,
    size: int = 1,
    streamer: bool = True,
    buffer: bool = False,
    consumer: bool = False,
) -> None:
    """One run of the pool DAG per pool (health check, top-up, wait until its standby job is
    ready): the streamer pool, and the buffer and consumer pools when asked."""
    confs = [
        conf
        for conf, wanted in (
            (POOL_CONF, streamer),
            (BUFFER_POOL_CONF, buffer),
            (CONSUMER_POOL_CONF, consumer),
        )  # fmt: skip
        if wanted
    ]
    for conf in confs:
        run_id = api.trigger("lclstream_warm_pool", {**conf, "size": size})
        state = api.wait_for_run("lclstream_warm_pool", run_id, timeout=180)
        if state != "success":
            raise SystemExit(f"warm pool run {run_id} {state}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help=f"repetitions of each ({RUNS})")
    parser.add_argument(
        "--timeline", action="store_true", help="print when each run's tasks were queued, ran"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed Kafka-path transfers first (1)"
    )
    parser.add_argument(
        "--warm", action="store_true", help="a warm streamer pool serves the transfers"
    )
    parser.add_argument(
        "--warm-buffer", action="store_true", help="a warm buffer pool serves them too"
    )
    parser.add_argument(
        "--warm-consumer", action="store_true", help="a warm consumer pool serves them too"
    )
    parser.add_argument(
        "--no-prestart",
        action="store_true",
        help="[lclstream] prestart = False: the transfer's own tasks claim the warm jobs",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="Airflow's metadata database on a PostgreSQL server of its own "
        "(scripts/services/postgres.sh, removed at the end) instead of SQLite",
    )
    parser.add_argument("--postgres-port", type=int, default=28191, help="its port (28191)")
    args = parser.parse_args()
    postgres_env = {**os.environ, "LCLSTREAM_POSTGRES_PORT": str(args.postgres_port)}
    warm: list[bool] | None = [] if args.warm else None
    warm_buffer: list[bool] | None = [] if args.warm_buffer else None
    warm_consumer: list[bool] | None = [] if args.warm_consumer else None
    pools = args.warm or args.warm_buffer or args.warm_consumer
    claims = (warm, warm_buffer, warm_consumer)
    prestarted: list[bool] = []
    warm_s: list[float] = []

    def keep(size: int = 1) -> None:
        if pools:
            keep_warm(api, size, args.warm, args.warm_buffer, args.warm_consumer)

    service("kafka", "start")
    service("slurm", "start")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sub in ("dags", "out", "xtc"):
            (root / sub).mkdir()
        write_xtc2(root / "xtc" / "xpptut15-r0014-s000-c000.xtc2", events=10)
        env = standalone_env(STATE, root / "dags", root / "out", root / "xtc", KAFKA)
        if args.no_prestart:
            env["AIRFLOW__LCLSTREAM__PRESTART"] = "False"
        if args.postgres:
            service("postgres", "start", postgres_env)
            env["LCLSTREAM_AIRFLOW_DB_URL"] = service("postgres", "url", postgres_env).strip()
        service("airflow-standalone", "start", env)
        try:
            api = AirflowApi("http://127.0.0.1:28080")
            ensure_topics(KAFKA)
            api.unpause("lclstream_transfer")
            api.unpause("lclstream_on_run_start")
            wait_for_group_member(KAFKA, "lclstream-on-run-start")
            if pools:
                api.unpause("lclstream_warm_pool")
            known = {r["dag_run_id"] for r in api.runs("lclstream_transfer")}
            kafka_s, api_s = [], []
            # Connected once, like the Elog's producer: the clock starts at the message, not at
            # this client's connection to the broker (about 0.2 s).
            producer = KafkaProducer(bootstrap_servers=KAFKA)
            producer.partitions_for("runs")  # connects and reads the topic metadata
            for i in range(args.warmup):  # untimed: the workers' first-task imports
                keep()
                sent = time.time()
                produce_run_start(KAFKA, "xpptut15", 14, producer)
                first = first_file_after(root / "out", sent)
                known = wait_finished(api, known, sent, False)
                print(f"warm-up {i}: kafka -> first file {first:.2f} s (not counted)")
            for i in range(args.runs):
                keep()
                sent = time.time()
                produce_run_start(KAFKA, "xpptut15", 14, producer)
                kafka_s.append(first_file_after(root / "out", sent))
                hop = api.runs("lclstream_on_run_start")[0]["dag_run_id"]
                if args.timeline:
                    print(timeline(api, "lclstream_on_run_start", hop, sent))
                known = wait_finished(api, known, sent, args.timeline, *claims)
                if pools:  # after the transfer: start_transfer has pushed it by then
                    prestarted.append(was_prestarted(api, hop))
                if warm and warm[-1]:
                    warm_s.append(kafka_s[-1])
                keep()
                sent = time.time()
                api.trigger("lclstream_transfer", {"experiment": "xpptut15", "run": 14})
                api_s.append(first_file_after(root / "out", sent))
                known = wait_finished(api, known, sent, args.timeline, *claims)
                if warm and warm[-1]:
                    warm_s.append(api_s[-1])
                print(f"run {i}: kafka -> first file {kafka_s[-1]:.2f} s, "
                      f"API -> first file {api_s[-1]:.2f} s"
                      + (f", warm {warm[-2:]}" if warm is not None else ""))  # fmt: skip
            producer.close()
            keep(size=0)  # cancels the standby jobs
        finally:
            service("airflow-standalone", "stop", env)
            if args.postgres:
                service("postgres", "purge", postgres_env)
    print(f"warm-up: {args.warmup} untimed run(s)")
    extra = ""
    if warm is not None:
        p50 = f"{statistics.median(warm_s):.2f}" if warm_s else "nan"
        extra = f" warm_p50_s={p50} warm_runs={sum(warm)}/{len(warm)}"
    if warm_buffer is not None:
        extra += f" warm_buffer_runs={sum(warm_buffer)}/{len(warm_buffer)}"
    if warm_consumer is not None:
        extra += f" warm_consumer_runs={sum(warm_consumer)}/{len(warm_consumer)}"
    if pools:
        extra += f" prestart_runs={sum(prestarted)}/{len(prestarted)}"
    print(
        f"kafka_p50_s={statistics.median(kafka_s):.2f} kafka_max_s={max(kafka_s):.2f} "
        f"api_p50_s={statistics.median(api_s):.2f} api_max_s={max(api_s):.2f} runs={args.runs}"
        + extra
        + f" preload={os.environ.get('LCLSTREAM_AIRFLOW_PRELOAD', '1')}"
        + f" db={'postgres' if args.postgres else 'sqlite'}"
    )


if __name__ == "__main__":
    main()
