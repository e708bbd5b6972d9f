"""`make demo`: one transfer on embedded defaults, no SLURM or Kafka needed.

Runs the ``lclstream_transfer`` DAG with Airflow's ``dag.test()`` and the local job backend: a
buffer, a consumer writing HDF5 files and a 2-rank MPI streamer of synthetic epix10k2M frames
(at least 2 GB of frames by default), or ``--psana`` for an xtc2 file made by psana's xtcwriter.

While it runs it prints one line per phase, as it happens, read from real signals: the child
process that runs ``dag.test()`` (Airflow imported, DAG parsed), the task instances in the
demo's Airflow database, the job files the local backend writes under ``demo-output/jobs``, the
buffer's ``/stats`` and the consumer's per-message records; and a progress line a second while
data arrives. Then a summary and ``demo-output/throughput.png``, both computed from the
consumer's per-message records over the same window (first to last message).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_provider_lclstream.config.detectors import DETECTOR_SHAPES  # noqa: E402
from airflow_provider_lclstream.config.streamer_components import SyntheticDetector  # noqa: E402
from airflow_provider_lclstream.consumer.records import RECORDS_SUFFIX, MessageRecord  # noqa: E402
from airflow_provider_lclstream.hooks.settings import OPTIONS  # noqa: E402
from airflow_provider_lclstream.transfer.layout import WATCH_TRANSFER  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OUT = REPO / "demo-output"
HOME = REPO / ".services" / "airflow-demo"
FERNET = "lTpKL4byaE_NjdDMHOZ-qn2doUyI7fpxHLib6CWWggY="  # demo-only; this home holds no secret
DAG_ID = "lclstream_transfer"
RANKS = 2
CONSUMERS = 1
DETECTOR = "epix10k2M"
COMPRESSION = "bitshuffle_with_lz4"
TARGET_BYTES = 2_000_000_000  # of frames, by default
PSANA_EVENTS = 10
POLL_S = 0.25
PROGRESS_EVERY_S = 1.0
MIN_BINS = 5  # of the MB/s plot
QUIET_AFTER_S = 5.0  # a "still waiting" line when nothing happened for this long

# The phases, in the order they happen; each is printed once, as "<label>: <detail>".
PHASES = {
    "db": "Airflow DB ready",
    "imported": "Airflow imported",
    "parsed": "DAG parsed",
    "run": "DAG run started",
    "buffer_submitted": "buffer submitted",
    "buffer_listening": "buffer listening",
    "consumers_up": "consumers up",
    "streamer_running": "streamer running",
    "consumers_connected": "consumers connected to the buffer",
    "data_at_buffer": "data at the buffer",
    "first_data": "first data at the consumer",
    "all_data": "all events received",
    "streamer_ended": "streamer ended",
    "consumers_ended": "consumers ended",
    "done": "done",
}
PROGRESS = "events arriving"
TASK_STATES_SHOWN = {"running", "deferred", "up_for_reschedule", "success", "failed", "skipped"}
TASK_STATES_SHOWN |= {"upstream_failed", "up_for_retry"}
FINAL_RUN_STATES = {"success", "failed"}
JOB_ROLE = re.compile(r"^(buffer|consumer\d+|streamer)-")


# -- set-up ----------------------------------------------------------------------------------------
def frame() -> tuple[tuple[int, ...], str, int]:
    """The synthetic detector's frame: shape, dtype and size in bytes."""
    import numpy as np

    shape = DETECTOR_SHAPES[DETECTOR]
    dtype = str(SyntheticDetector.model_fields["dtype"].default)
    return shape, dtype, int(np.prod(shape)) * np.dtype(dtype).itemsize


def default_events() -> int:
    """Events per rank for at least ``TARGET_BYTES`` of frames from all ranks."""
    return math.ceil(TARGET_BYTES / (frame()[2] * RANKS))


def airflow_env() -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__FERNET_KEY": FERNET,
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        OPTIONS["jobs_dir"].env: str(OUT / "jobs"),
        OPTIONS["trigger_settle_seconds"].env: "0",  # dag.test() runs triggers inline
        "LCLSTREAM_PSANA_OFFLINE": "1",  # the streamer job's: psana2 without calibration DB
    }


def request(psana: bool, events: int) -> dict[str, Any]:
    common = {"ranks": RANKS, "consumers": CONSUMERS, "output_dir": str(OUT / "files")}
    if psana:
        from tests.psana_data import write_xtc2

        xtc = write_xtc2(OUT / "data.xtc2", events=events)
        return {**common, "files": [str(xtc)], "detector_name": "xppcspad", "img_per_file": 2}
    return {
        **common,
        "synthetic": True,
        "events": events,
        "img_per_file": 10,
        "detector_name": DETECTOR,
        "compression": COMPRESSION,
    }


def inner(conf_path: str, result_path: str) -> int:
    """Run the DAG (in a child process, so Airflow's logs go to a file); mark its start-up."""
    marks = Path(result_path).with_name("inner.jsonl")

    def mark(name: str, **extra: Any) -> None:
        with open(marks, "a") as handle:
            handle.write(json.dumps({"mark": name, "t": time.time(), **extra}) + "\n")

    import airflow.sdk  # noqa: F401  (the import cost, measured apart from the parse)

    mark("imported")
    from tests.dags.dag_runner import load_dag, task_states

    dag = load_dag(DAG_ID)
    mark("parsed", tasks=len(dag.task_ids))
    run = dag.test(run_conf=json.loads(Path(conf_path).read_text()))
    ti = run.get_task_instance(WATCH_TRANSFER)
    stats = ti.xcom_pull(task_ids=WATCH_TRANSFER) if ti is not None else None
    Path(result_path).write_text(
        json.dumps({"state": str(run.state), "tasks": task_states(run), "stats": stats})
    )
    return 0


# -- watching the run ------------------------------------------------------------------------------
def utc(stamp: str | None) -> float | None:
    """A timestamp of the Airflow DB (naive UTC text) as seconds since the epoch."""
    if not stamp:
        return None
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Watch:
    """Polls the run's signals and prints a line for each new phase and task state."""

    def __init__(self, started: float, expected: int | None, consumers: int) -> None:
        self.t0 = started
        self.expected = expected
        self.consumers = consumers
        self.seen: dict[str, float] = {}
        self.marks: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, str] = {}
        self.run_id: str | None = None
        self.run_times: tuple[float | None, float | None] = (None, None)
        self.run_state: str | None = None
        self.metrics_url: str | None = None
        self.records: list[MessageRecord] = []
        self.offsets: dict[Path, int] = {}
        self.last_line = started
        self.buffer_seen: tuple[int, int, int] | None = None
        self.warned_full = False

    def emit(self, text: str) -> None:
        now = time.time()
        print(f"[{now - self.t0:6.1f} s] {text}", flush=True)
        self.last_line = now

    def phase(self, key: str, detail: str = "") -> None:
        if key in self.seen:
            return
        self.seen[key] = time.time()
        self.emit(PHASES[key] + (f": {detail}" if detail else ""))

    def poll(self) -> None:
        """Every source, in the order things happen (a job's end is read after its data)."""
        self.poll_marks()
        self.poll_db()
        jobs = self.jobs()
        self.poll_job_starts(jobs)
        self.poll_buffer()
        self.poll_records()
        self.poll_job_ends(jobs)
        if self.run_state in FINAL_RUN_STATES:
            self.phase("done", f"DAG run {self.run_state}")

    def poll_marks(self) -> None:
        path = OUT / "inner.jsonl"
        if not path.exists():
            return
        for line in path.read_text().splitlines(keepends=True):
            if line.endswith("\n"):  # else still being written
                mark = json.loads(line)
                self.marks.setdefault(mark["mark"], mark)
        if "imported" in self.marks:
            took = self.marks["imported"]["t"] - self.seen.get("db", self.t0)
            self.phase("imported", f"Python and Airflow loaded in a child process ({took:.1f} s)")
        if "parsed" in self.marks:
            mark = self.marks["parsed"]
            took = mark["t"] - self.marks["imported"]["t"]
            self.phase("parsed", f"{DAG_ID}, {mark['tasks']} tasks, in the DB ({took:.1f} s)")

    def poll_db(self) -> None:
        db = HOME / "airflow.db"
        if "parsed" not in self.seen or not db.exists():
            return
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        except sqlite3.Error:
            return
        try:
            self.read_db(con)
        except sqlite3.Error:
            pass  # busy: the next poll reads it
        finally:
            con.close()

    def read_db(self, con: sqlite3.Connection) -> None:
        if self.run_id is None:
            row = con.execute(
                "SELECT run_id, start_date FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                (DAG_ID,),
            ).fetchone()
            start = utc(row[1]) if row else None
            if row is None or start is None or start < self.t0 - 1:
                return  # not yet; an older run of an earlier demo
            self.run_id = row[0]
            self.phase("run", f"dag.test() run {row[0]}")
        key = (DAG_ID, self.run_id)
        row = con.execute(
            "SELECT start_date, end_date, state FROM dag_run WHERE dag_id = ? AND run_id = ?", key
        ).fetchone()
        self.run_times, run_state = (utc(row[0]), utc(row[1])), row[2]
        tasks = con.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ? "
            "ORDER BY start_date, task_id",
            key,
        ).fetchall()
        for task_id, state in tasks:
            if state in TASK_STATES_SHOWN and self.tasks.get(task_id) != state:
                self.tasks[task_id] = state
                self.emit(f"task {task_id}: {state}")
        if self.metrics_url is None:
            row = con.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'metrics_url'",
                key,
            ).fetchone()
            if row:
                self.metrics_url = str(json.loads(row[0]))
        self.run_state = run_state  # after the tasks: their last states are printed first

    def jobs(self) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {"buffer": [], "consumer": [], "streamer": []}
        root = OUT / "jobs"
        if root.is_dir():
            for path in sorted(root.iterdir()):
                match = JOB_ROLE.match(path.name)
                if match and (path / "job.json").exists():
                    found[match.group(1).rstrip("0123456789")].append(path)
        return found

    def poll_job_starts(self, jobs: dict[str, list[Path]]) -> None:
        if jobs["buffer"]:
            self.phase("buffer_submitted", f"job {jobs['buffer'][0].name}")
        consumers = jobs["consumer"]
        running = [j for j in consumers if (j / "started.json").exists()]
        if consumers and len(running) == self.consumers:
            self.phase(
                "consumers_up", f"{len(running)} of {self.consumers} lclstream-receive running"
            )
        streamer = jobs["streamer"][0] if jobs["streamer"] else None
        if streamer and (streamer / "started.json").exists():
            self.phase("streamer_running", f"mpiexec -n {RANKS} lclstreamer, job {streamer.name}")

    def poll_job_ends(self, jobs: dict[str, list[Path]]) -> None:
        streamer, consumers = jobs["streamer"][0] if jobs["streamer"] else None, jobs["consumer"]
        if streamer and (result := read_json(streamer / "result.json")) is not None:
            self.phase("streamer_ended", f"exit code {result.get('exit_code')}")
        ended = [read_json(j / "result.json") for j in consumers]
        if consumers and len(consumers) == self.consumers and all(ended):
            codes = sorted({str(r.get("exit_code")) for r in ended if r})
            summaries = [consumer_summary(j) for j in consumers]
            detail = ", ".join(
                f"{s.get('messages')} messages, ok={s.get('ok')}" for s in summaries if s
            )
            self.phase("consumers_ended", f"exit code {'/'.join(codes)}; {detail}")

    def poll_buffer(self) -> None:
        if self.metrics_url is None or "all_data" in self.seen:
            return
        try:
            with urllib.request.urlopen(f"{self.metrics_url}/stats", timeout=0.5) as answer:
                stats = json.loads(answer.read())
        except (OSError, ValueError):
            return
        self.phase("buffer_listening", f"/stats answers on {self.metrics_url}")
        connected = int(stats.get("consumers", {}).get("connected", 0))
        if connected >= self.consumers:
            self.phase("consumers_connected", f"{connected} of {self.consumers}")
        got, held = int(stats.get("messages_in", 0)), int(stats.get("buffered_bytes", 0))
        if got:
            self.phase("data_at_buffer", f"{got} messages in")
        now = (got, held, connected)
        fresh = now != self.buffer_seen and time.time() - self.last_line >= PROGRESS_EVERY_S
        if got and not self.records and fresh:
            self.buffer_seen = now
            self.emit(
                f"at the buffer: {got} messages in, {int(stats.get('messages_out', 0))} out, "
                f"{size(held)} held" + ("" if connected else " (no consumer yet)")
            )
        capacity = int(stats.get("capacity_bytes") or 0)
        if capacity and held >= 0.95 * capacity and not connected and not self.warned_full:
            self.warned_full = True
            self.emit(
                f"buffer full: {size(held)} of {size(capacity)} held and no consumer connected; "
                "the streamer's sends block until a consumer starts (dag.test() runs one task "
                "at a time and ran run_streamer before start_consumers)"
            )

    def poll_records(self) -> None:
        for path in sorted((OUT / "files").glob(f"*/consumer-*/*{RECORDS_SUFFIX}")):
            offset = self.offsets.get(path, 0)
            with open(path) as handle:
                handle.seek(offset)
                for line in handle:
                    if not line.endswith("\n"):
                        break
                    self.records.append(MessageRecord.model_validate_json(line))
                    offset += len(line.encode())
            self.offsets[path] = offset
        if not self.records:
            return
        first = min(self.records, key=lambda r: r.received_at)
        since = first.received_at - (self.run_times[0] or self.t0)
        self.phase(
            "first_data",
            f"{first.events} events from rank {first.rank}, {since:.1f} s after the run started",
        )
        events = sum(r.events for r in self.records)
        total = sum(r.bytes for r in self.records)
        now = time.time()
        done = self.expected is not None and events >= self.expected
        quiet = "all_data" in self.seen or "consumers_ended" in self.seen
        if not quiet and (done or now - self.last_line >= PROGRESS_EVERY_S):
            if done:  # the mean, as in the summary
                span = max(r.received_at for r in self.records) - first.received_at
                rate = f"{total / max(span, 1e-9) / 1e6:.1f} MB/s first to last message"
            else:
                recent = sum(r.bytes for r in self.records if r.received_at > now - 1.0)
                rate = f"{recent / 1e6:.1f} MB/s in the last second"
            of = f"/{self.expected}" if self.expected else ""
            self.emit(f"{PROGRESS}: {events}{of} events, {size(total)}, {rate}")
        if done:
            self.phase("all_data", f"{events} events in {len(self.records)} messages")

    def waiting(self) -> None:
        """A line when nothing was printed for a while, naming what the demo waits for."""
        if time.time() - self.last_line < QUIET_AFTER_S:
            return
        upcoming = [label for key, label in PHASES.items() if key not in self.seen]
        running = [t for t, s in self.tasks.items() if s in ("running", "deferred")]
        where = f" (task {', '.join(running)} {self.tasks[running[0]]})" if running else ""
        what = upcoming[0] if upcoming else "Airflow's dag.test() process to exit"
        self.emit(f"... waiting for: {what}{where}")


def size(count: float) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"


def consumer_summary(job: Path) -> dict[str, Any] | None:
    """The JSON summary ``lclstream-receive`` prints last (in the job's output.log)."""
    try:
        lines = (job / "output.log").read_text().strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except ValueError:
                return None
    return None


# -- numbers and plot ----------------------------------------------------------------------------
def analyse(records: list[MessageRecord]) -> dict[str, Any]:
    """Totals, per-rank counts and per-second series, all from the records; t=0 is the first
    message, and MB/s is bytes over the window from the first to the last message."""
    import numpy as np

    records = sorted(records, key=lambda r: r.received_at)
    first = records[0].received_at
    t = np.array([r.received_at - first for r in records])
    sizes = np.array([r.bytes for r in records], dtype=float)
    window = float(t[-1])
    total_bytes = int(sizes.sum())
    per_rank: dict[str, dict[str, int]] = {}
    for r in sorted(records, key=lambda r: (r.rank is None, r.rank or 0)):
        counts = per_rank.setdefault(str(r.rank), {"messages": 0, "events": 0, "bytes": 0})
        counts["messages"] += 1
        counts["events"] += r.events
        counts["bytes"] += r.bytes
    bins = max(MIN_BINS, round(window))  # about a second each, more bins on short streams
    edges = np.linspace(0.0, window, bins + 1) if window > 0 else np.array([0.0, 1.0])
    width = float(edges[1] - edges[0])
    rank_mb_per_s: dict[str, list[float]] = {}
    rank_cumulative: dict[str, dict[str, list[float]]] = {}
    ranks = np.array([str(r.rank) for r in records])
    events = np.array([r.events for r in records])
    for rank in per_rank:
        mine = ranks == rank
        mb, _ = np.histogram(t[mine], bins=edges, weights=sizes[mine])
        rank_mb_per_s[rank] = (mb / width / 1e6).tolist()
        rank_cumulative[rank] = {
            "t_s": t[mine].tolist(),
            "events": np.cumsum(events[mine]).tolist(),
        }
    return {
        "first_message_at": first,
        "last_message_at": records[-1].received_at,
        "window_s": window,
        "messages": len(records),
        "events": sum(r.events for r in records),
        "bytes": total_bytes,
        "mb_per_s": total_bytes / window / 1e6 if window > 0 else None,
        "per_rank": per_rank,
        "bin_edges_s": edges.tolist(),
        "bin_width_s": width,
        "rank_mb_per_s": rank_mb_per_s,
        "t_s": t.tolist(),
        "cumulative_events": np.cumsum(events).tolist(),
        "rank_cumulative_events": rank_cumulative,
    }


def figure(numbers: dict[str, Any], title: str) -> Figure:
    """MB/s per ~1 s bin and per rank (top) and cumulative events (bottom), t=0 = first data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5), height_ratios=[3, 2])
    edges = np.array(numbers["bin_edges_s"])
    total = np.zeros(len(edges) - 1)
    for rank, series in numbers["rank_mb_per_s"].items():
        total += np.array(series)
        top.stairs(series, edges, label=f"rank {rank}", linewidth=1.5, baseline=None)
    top.stairs(total, edges, label="all ranks", color="black", linewidth=2, baseline=None)
    if numbers["mb_per_s"] is not None:
        top.axhline(
            numbers["mb_per_s"],
            color="gray",
            linestyle="--",
            label=f"mean {numbers['mb_per_s']:.1f} MB/s (first to last message)",
        )
    top.set_ylabel(f"MB/s (bins of {numbers['bin_width_s']:.2f} s)")
    top.set_ylim(0, max(float(total.max()), 1e-3) * 1.4)  # room for the legend
    top.legend(loc="upper left", fontsize="small", ncol=2)
    top.set_title(title, fontsize="medium")
    top.grid(alpha=0.3)
    bottom.step(
        [0.0, *numbers["t_s"]],
        [0, *numbers["cumulative_events"]],
        where="post",
        color="black",
        linewidth=2,
        label="all ranks",
    )
    for rank, series in numbers["rank_cumulative_events"].items():
        bottom.step(
            [0.0, *series["t_s"]], [0, *series["events"]], where="post", label=f"rank {rank}"
        )
    bottom.legend(loc="upper left", fontsize="small")
    bottom.set_ylabel("events received")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("seconds since the first data message reached the consumer")
    bottom.grid(alpha=0.3)
    bottom.set_xlim(0.0, max(float(edges[-1]), 1e-3))
    fig.tight_layout()
    return fig


# -- main ------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events",
        type=int,
        help=f"events per rank (default: enough for {TARGET_BYTES / 1e9:g} GB of frames); with "
        f"--psana, events in the xtc2 file, shared by the ranks ({PSANA_EVENTS})",
    )
    parser.add_argument("--psana", action="store_true", help="stream an xtc2 file with psana2")
    parser.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return inner(*args.inner)
    if args.events is not None and args.events < 1:
        parser.error("--events must be >= 1")
    if args.psana and importlib.util.find_spec("psana") is None:
        parser.error(
            "--psana needs psana2, which `make demo` does not install: run `make install` "
            "(every extra; as root it adds Debian's libkrb5-dev) or "
            "`.venv/bin/pip install -e '.[psana]'`"
        )
    events = args.events or (PSANA_EVENTS if args.psana else default_events())
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    env = airflow_env()
    conf = {"request": request(args.psana, events)}
    (OUT / "conf.json").write_text(json.dumps(conf))
    started = time.time()
    shape, dtype, frame_bytes = frame()
    if args.psana:
        expected = events  # the ranks share the file's events
        what = f"the xtc2 file {OUT / 'data.xtc2'} ({events} events of psana's test detectors)"
    else:
        expected = RANKS * events
        what = (
            f"{expected} synthetic {DETECTOR} frames ({'x'.join(map(str, shape))} {dtype}, "
            f"{frame_bytes / 1e6:.2f} MB each: {expected * frame_bytes / 1e9:.2f} GB), "
            f"{events} per rank, sent {COMPRESSION}-compressed"
        )
    print(f"lclstream demo: {DAG_ID} with Airflow dag.test() and the local job backend")
    print(f"  streams {what}")
    print(f"  from a {RANKS}-rank MPI streamer through a buffer to {CONSUMERS} consumer")
    print(f"  logs: {OUT / 'airflow.log'} (Airflow), {OUT / 'jobs'}/*/output.log (jobs)")
    watch = Watch(started, expected, CONSUMERS)
    migrated = subprocess.run(
        ["bash", str(REPO / "scripts/services/airflow.sh"), "start"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if migrated.returncode != 0:
        print(migrated.stdout + migrated.stderr, file=sys.stderr)
        return 1
    watch.phase("db", f"{migrated.stdout.strip()} ({time.time() - started:.1f} s)")
    with open(OUT / "airflow.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, __file__, "--inner", str(OUT / "conf.json"), str(OUT / "result.json")],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        try:
            while child.poll() is None:
                watch.poll()
                watch.waiting()
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping the DAG run and its jobs ...", flush=True)
            child.terminate()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
            stop_jobs()
            return 130
    watch.poll()
    stop_jobs()  # a failed run may leave jobs its teardown did not reach
    if "done" in watch.seen:
        watch.emit(
            f"(Airflow's dag.test() process exited {time.time() - watch.seen['done']:.1f} s "
            "after the run ended)"
        )
    return report(watch, conf["request"], expected, frame_bytes if not args.psana else None)


def stop_jobs() -> None:
    """Cancel the demo's local jobs that still run (each is a process group of its own)."""
    from airflow_provider_lclstream.backends.local import LocalBackend

    backend = LocalBackend(OUT / "jobs", kill_grace=5.0)
    for job in sorted((OUT / "jobs").glob("*/job.json")):
        if not backend.state(job.parent.name).is_final:
            print(f"stopping job {job.parent.name}, left running", flush=True)
            backend.cancel(job.parent.name)


def report(watch: Watch, req: dict[str, Any], expected: int | None, frame_bytes: int | None) -> int:
    """Print the summary, draw the plot and write ``summary.json``, all from the same records."""
    result = read_json(OUT / "result.json")
    if result is None:
        print(f"the DAG run crashed: see {OUT / 'airflow.log'}", file=sys.stderr)
        return 1
    state = str(result["state"]).rsplit(".", 1)[-1]
    watch.phase("done", f"DAG run {state}")  # when the DB could not be read at the end
    stats = result["stats"] or {}
    if not watch.records:
        print(f"no data reached the consumer: see {OUT / 'airflow.log'} and the job logs")
        return 1
    numbers = analyse(watch.records)
    frames_mb = numbers["events"] * frame_bytes / 1e6 if frame_bytes else None
    title = (
        f"{DAG_ID}: {numbers['events']} events, {RANKS} MPI ranks -> buffer -> "
        f"{CONSUMERS} consumer\n{size(numbers['bytes'])} on the wire"
        + (f" ({frames_mb:.1f} MB of frames, {req['compression']})" if frames_mb else "")
    )
    png = OUT / "throughput.png"
    figure(numbers, title).savefig(png, dpi=100)
    stream_ranks = {str(k): v for k, v in stats.get("per_rank", {}).items()}
    ranks_agree = stream_ranks == {
        k: {"events": v["events"], "messages": v["messages"]}
        for k, v in numbers["per_rank"].items()
    }
    ok = (
        state == "success"
        and (expected is None or numbers["events"] == expected)
        and stats.get("events") == numbers["events"]
        and stats.get("lost") == 0
        and ranks_agree
    )
    lines = summary_lines(watch, numbers, result, expected, frames_mb)
    counted = (
        f"{stats.get('events')} events from {stats.get('producers_ended')} of "
        f"{stats.get('producers_expected')} ranks, skipped {stats.get('skipped')}, lost "
        f"{stats.get('lost')} (end-of-stream records via the buffer)"
        + ("" if ranks_agree else f"; per rank {stream_ranks} DIFFERS from the records")
        if stats
        else "none: watch_transfer did not return the buffer's report"
    )
    lines += [
        f"streamer's count   : {counted}",
        f"files              : {numbers['messages']} HDF5 files under {OUT / 'files'}",
        f"records            : {', '.join(str(p) for p in sorted(watch.offsets))}",
        f"plot               : {png}",
        "result             : "
        + ("OK, every event delivered" if ok else "FAILED (see airflow.log and the job logs)"),
    ]
    print("summary (from the consumer's per-message records; the plot shows the same data):")
    for line in lines:
        print("  " + line)
    run_start = watch.run_times[0]
    numbers.update(
        ok=ok,
        state=state,
        expected_events=expected,
        frame_bytes=frame_bytes,
        streamer_stats=stats,
        phases={k: v - watch.t0 for k, v in watch.seen.items()},
        airflow_startup_s=None if run_start is None else run_start - watch.t0,
        run_start_to_first_data_s=(
            None if run_start is None else numbers["first_message_at"] - run_start
        ),
    )
    (OUT / "summary.json").write_text(json.dumps(numbers, indent=1))
    return 0 if ok else 1


def summary_lines(
    watch: Watch,
    numbers: dict[str, Any],
    result: dict[str, Any],
    expected: int | None,
    frames_mb: float | None,
) -> list[str]:
    """The run, the data and the timings: start-up, to first data, streaming, wind-down."""
    tasks = result["tasks"]
    failed = [f"{k}={v}" for k, v in tasks.items() if v != "success"]
    per_rank = ", ".join(
        f"rank {k}: {v['events']} in {v['messages']} messages, {size(v['bytes'])}"
        for k, v in numbers["per_rank"].items()
    )
    window, rate = numbers["window_s"], numbers["mb_per_s"]
    rate_text = f"{rate:.1f} MB/s on the wire" if rate is not None else "one message, no rate"
    if frames_mb and rate is not None:
        rate_text += f" ({frames_mb / window:.1f} MB/s of frames)"
    lines = [
        f"DAG run            : {result['state'].rsplit('.', 1)[-1]}"
        + (f" ({', '.join(failed)})" if failed else f" (all {len(tasks)} tasks success)"),
        f"events             : {numbers['events']}"
        + (f" of {expected}" if expected is not None else ""),
        f"per rank           : {per_rank}",
        f"data               : {size(numbers['bytes'])} on the wire in "
        f"{numbers['messages']} messages"
        + (
            f" ({100 * numbers['bytes'] / 1e6 / frames_mb:.0f}% of the frames' size)"
            if frames_mb
            else ""
        ),
    ]
    run_start, run_end = watch.run_times
    first, last = numbers["first_message_at"], numbers["last_message_at"]
    if run_start is not None:
        lines += [
            f"Airflow start-up   : {run_start - watch.t0:.1f} s, demo start to DAG run start "
            f"({startup_parts(watch, run_start)})",
            f"to first data      : {first - run_start:.1f} s, DAG run start to the first message "
            "at the consumer (tasks, job start-up, MPI start)",
        ]
    lines.append(
        f"streaming          : {window:.2f} s for {numbers['events']} events, first to last "
        f"message: {rate_text}"
    )
    if run_end is not None:
        lines.append(
            f"wind-down          : {run_end - last:.1f} s, last message to DAG run end "
            "(end-of-stream, waits, teardown)"
        )
    order = job_order(watch)
    if order:
        lines.append(f"note               : {order}")
    return lines


def job_order(watch: Watch) -> str | None:
    """A note when the consumer started late: the stream then waited in the buffer."""
    jobs = watch.jobs()
    if not jobs["streamer"] or not jobs["consumer"]:
        return None
    streamer = jobs["streamer"][0]
    begun = (read_json(streamer / "started.json") or {}).get("started")
    ended = (read_json(streamer / "result.json") or {}).get("finished")
    consumer = max(
        (read_json(j / "started.json") or {}).get("started", 0.0) for j in jobs["consumer"]
    )
    if ended is not None and consumer > ended:
        return (
            f"the consumer job started {consumer - ended:.1f} s after the streamer job ended "
            "(dag.test() ran run_streamer before start_consumers): the whole stream waited in "
            "the buffer, so the rate above is the buffer's drain rate, not the streamer's"
        )
    if begun is not None and consumer > begun:
        return f"the consumer job started {consumer - begun:.1f} s after the streamer job"
    return None


def startup_parts(watch: Watch, run_start: float) -> str:
    """The parts of the start-up, from the demo's own marks."""
    db = watch.seen.get("db", watch.t0)
    imported = watch.marks.get("imported", {}).get("t")
    parsed = watch.marks.get("parsed", {}).get("t")
    if imported is None or parsed is None:
        return "no marks"
    return (
        f"DB {db - watch.t0:.1f} s, import {imported - db:.1f} s, "
        f"DAG parse {parsed - imported:.1f} s, dag.test() set-up {run_start - parsed:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
