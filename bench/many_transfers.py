"""Many transfers in flight at once in a standalone Airflow: what the triggerer carries.

Starts a standalone Airflow of its own (``scripts/services/airflow-standalone.sh`` with a state
folder and ports of its own, so the tests' stack on 28080 is left alone) whose DAGs folder holds
one DAG, ``bench_many_transfers``: the transfer group (deferrable) with ``max_active_runs`` =
the number of transfers. It triggers N small synthetic transfers, one every ``--pace`` seconds
(local backend: per transfer a buffer, one consumer and a one-rank streamer), samples the
triggerer's process tree every 0.5 s until every run ended (CPU seconds, peak RSS) and counts
the deferred task instances (the triggers the triggerer holds), then stops the stack and
cancels any job left running. Ends with one line:

    transfers=50 runs_ok=50 deferred_peak=... running_peak=... triggerer_cpu_s=...
    triggerer_rss_mb=... triggerer_rss_start_mb=... wall_s=... db=postgres all_ok=1

    .venv/bin/python bench/many_transfers.py [--transfers 50] [--events 200] [--port 28180]
        [--parallelism 8] [--pace 1.0] [--timeout 1500] [--postgres [--postgres-port 28190]]
        [--settle S] [--keep]

It is heavy: N buffers, consumers and streamers run on this host next to Airflow. By default the
stack keeps its metadata in SQLite (one writer): on the 2-core dev VM 10 transfers went through,
while 20 and 50 ended with writes waiting 60 s for SQLite's lock (API 500s, the triggerer
stopping on "database is locked"); the final line then says ``all_ok=0`` and ``error=...``.
``--postgres`` puts it on a PostgreSQL server of its own instead (``scripts/services/
postgres.sh``, a private cluster on ``--postgres-port``, removed at the end, also after an error
or Ctrl-C): what 20 and more transfers need. ``--settle S`` sets the stack's
``[lclstream] trigger_settle_seconds`` (default 10; ``triggers/settle.py``): with 50 transfers on
2 cores the scheduler took more than 10 s to see a deferring worker's exit, and 4 of 50 runs
failed on Airflow's race (``run_streamer`` "finished with state success, but the task instance's
state attribute is queued"); with 30 all 50 succeeded. ``--keep`` leaves the stack (and the server)
running (the state folder and how to stop them are printed) for a look at the UI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts/services/airflow-standalone.sh"
POSTGRES = REPO / "scripts/services/postgres.sh"
DAG_ID = "bench_many_transfers"
DAG_TEXT = '''"""bench/many_transfers.py's DAG: one transfer per run, its request the run's conf."""

from datetime import datetime

from airflow.sdk import DAG, get_current_context, task

from airflow_provider_lclstream.task_groups.transfer import transfer_task_group

with DAG(
    "{dag_id}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
    max_active_runs={runs}, max_active_tasks={tasks},
) as dag:

    @task
    def build_request():
        from airflow_provider_lclstream.transfer.request import request_from

        return request_from(get_current_context()["dag_run"].conf, {{}})

    transfer_task_group(build_request(), deferrable=True, poll_interval=2.0)
'''


class Api:
    """The stack's REST API v2 (SimpleAuthManager token)."""

    def __init__(self, url: str, user: str = "admin", password: str = "admin") -> None:
        token = httpx.post(
            f"{url}/auth/token", json={"username": user, "password": password}, timeout=30
        )
        token.raise_for_status()
        self.client = httpx.Client(
            base_url=f"{url}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=120,
        )

    def trigger(self, run_id: str, conf: dict[str, Any], tries: int = 5) -> None:
        """Create run ``run_id``; a retry after a timeout finds it made already (409)."""
        for attempt in range(tries):
            try:
                response = self.client.post(
                    f"/dags/{DAG_ID}/dagRuns",
                    json={"dag_run_id": run_id, "logical_date": None, "conf": conf},
                )
            except httpx.TimeoutException:
                if attempt == tries - 1:
                    raise
                continue
            if response.status_code == 409 and attempt:
                return
            response.raise_for_status()
            return

    def wait_for_dag(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.get(f"/dags/{DAG_ID}").status_code == 200:
                return
            time.sleep(2)
        raise SystemExit(f"{DAG_ID} was not parsed within {timeout} s")

    def count(self, path: str, **params: Any) -> int:
        response = self.client.get(path, params={"limit": 1, **params})
        response.raise_for_status()
        return int(response.json()["total_entries"])


class Sampler:
    """CPU seconds and RSS of a process and its children, sampled on demand."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.cpu: dict[int, float] = {}
        self.peak_rss = 0
        self.start_rss = self.sample()

    def sample(self) -> int:
        procs = [self.root]
        with contextlib.suppress(psutil.Error):
            procs += self.root.children(recursive=True)
        rss = 0
        for proc in procs:
            try:
                times = proc.cpu_times()
                self.cpu[proc.pid] = times.user + times.system
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu.values())


def service(script: Path, command: str, env: dict[str, str], timeout: float = 300) -> str:
    """Run ``script command``; its stdout, or SystemExit with its output when it failed."""
    done = subprocess.run(
        ["bash", str(script), command], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise SystemExit(f"{script.name} {command} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def stack(command: str, env: dict[str, str], timeout: float = 300) -> None:
    service(SCRIPT, command, env, timeout)


def cancel_left_jobs(root: Path) -> None:
    """Cancel the transfers' local jobs still running (a run the stack did not finish never ran
    its teardown)."""
    from airflow_provider_lclstream.backends.local import LocalBackend
    from airflow_provider_lclstream.exceptions import JobBackendError

    backend = LocalBackend(root, kill_grace=5.0)
    for job in sorted(root.iterdir()) if root.exists() else []:
        try:
            if not backend.state(job.name).is_final:
                backend.cancel(job.name)
                print(f"cancelled job {job.name} left running", flush=True)
        except JobBackendError as err:
            print(f"could not cancel job {job.name}: {err}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0],
        epilog="example (50 transfers on PostgreSQL, fits 2 cores): .venv/bin/python "
        "bench/many_transfers.py --postgres --transfers 50 --events 50 --pace 1 --parallelism 8 "
        "--settle 30",
    )
    parser.add_argument("--transfers", type=int, default=50)
    parser.add_argument("--events", type=int, default=200, help="synthetic events per transfer")
    parser.add_argument("--port", type=int, default=28180, help="api-server (log servers +1, +2)")
    parser.add_argument("--parallelism", type=int, default=8, help="[core] parallelism")
    parser.add_argument(
        "--pace", type=float, default=1.0, help="seconds between triggers (SQLite has one writer)"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="metadata database on a PostgreSQL server of its own (scripts/services/postgres.sh) "
        "instead of SQLite",
    )
    parser.add_argument(
        "--postgres-port", type=int, default=28190, help="that server's port on 127.0.0.1"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="[lclstream] trigger_settle_seconds of the stack (default: the provider's, 10); "
        "under heavy load Airflow's defer race needs more",
    )
    parser.add_argument("--timeout", type=float, default=1500.0)
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lclstream-bench-many-"))
    dags, out, jobs = work / "dags", work / "out", work / "jobs"
    for folder in (dags, out, jobs):
        folder.mkdir()
    tasks = max(16, args.transfers * 7)
    (dags / f"{DAG_ID}.py").write_text(
        DAG_TEXT.format(dag_id=DAG_ID, runs=args.transfers, tasks=tasks)
    )
    env = {
        **os.environ,
        "LCLSTREAM_SERVICES_DIR": str(work / "state"),
        "LCLSTREAM_AIRFLOW_PORT": str(args.port),
        "LCLSTREAM_AIRFLOW_DAGS_FOLDER": str(dags),
        "LCLSTREAM_AIRFLOW_PARALLELISM": str(args.parallelism),
        "LCLSTREAM_AIRFLOW_START_TIMEOUT": "240",
        "AIRFLOW__LCLSTREAM__JOBS_DIR": str(jobs),
        "AIRFLOW__LCLSTREAM__BACKEND": "local",
        "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": str(args.transfers),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    if args.settle is not None:
        env["AIRFLOW__LCLSTREAM__TRIGGER_SETTLE_SECONDS"] = str(args.settle)
    print(f"state: {work}", flush=True)
    db = "postgres" if args.postgres else "sqlite"
    ok = 0
    wall = cpu_s = 0.0
    sampler: Sampler | None = None
    deferred_peak = running_peak = 0
    error = ""
    started = time.monotonic()
    postgres_env = {**env, "LCLSTREAM_POSTGRES_PORT": str(args.postgres_port)}
    try:
        if args.postgres:
            service(POSTGRES, "start", postgres_env, timeout=600)
            env["LCLSTREAM_AIRFLOW_DB_URL"] = service(POSTGRES, "url", postgres_env).strip()
        stack("start", env)
        api = Api(f"http://127.0.0.1:{args.port}")
        api.wait_for_dag()
        api.client.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
        pid = int((work / "state/airflow-standalone/run/triggerer.pid").read_text())
        sampler = Sampler(pid)
        cpu_before = sampler.cpu_s
        request = {
            "synthetic": True,
            "events": args.events,
            "img_per_file": 10,
            "ranks": 1,
            "consumers": 1,
            "detector_name": "epix10k2M",
        }
        started = time.monotonic()
        stamp = time.strftime("%Y%m%dT%H%M%S")
        deadline = started + args.timeout
        try:
            for index in range(args.transfers):
                mine = {**request, "output_dir": str(out / f"t{index:03d}")}  # files of its own
                api.trigger(f"bench_{stamp}_{index:03d}", {"request": mine})
                time.sleep(args.pace)
        except httpx.HTTPError as err:  # the stack gave up (SQLite's lock): report that
            error = f"trigger {index}: {type(err).__name__}"
            deadline = time.monotonic()
        last_report = 0.0
        while time.monotonic() < deadline:
            sampler.sample()
            try:
                states = api.client.get(
                    f"/dags/{DAG_ID}/dagRuns", params={"limit": args.transfers + 10}
                ).json()["dag_runs"]
                deferred = api.count(f"/dags/{DAG_ID}/dagRuns/~/taskInstances", state="deferred")
            except httpx.HTTPError as err:  # SQLite busy under load: sample again
                print(f"API: {type(err).__name__}: {err}", flush=True)
                time.sleep(1)
                continue
            finished = [r for r in states if r["state"] in ("success", "failed")]
            running = sum(r["state"] == "running" for r in states)
            deferred_peak = max(deferred_peak, deferred)
            running_peak = max(running_peak, running)
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                print(
                    f"{time.monotonic() - started:6.0f} s: {len(finished)}/{args.transfers} "
                    f"ended, {running} runs running, {deferred} deferred, triggerer "
                    f"{sampler.cpu_s - cpu_before:.1f} CPU s, {sampler.peak_rss / 2**20:.0f} MB",
                    flush=True,
                )
            if len(finished) >= args.transfers:
                ok = sum(r["state"] == "success" for r in states)
                break
            time.sleep(0.5)
        wall = time.monotonic() - started
        sampler.sample()
        cpu_s = sampler.cpu_s - cpu_before
        if not ok and not error:
            error = f"not every run ended within {args.timeout:.0f} s"
    finally:
        if args.keep:
            print(
                f"left running; stop with: LCLSTREAM_SERVICES_DIR={work / 'state'} "
                f"LCLSTREAM_AIRFLOW_PORT={args.port} bash {SCRIPT} stop"
                + (
                    f"; LCLSTREAM_SERVICES_DIR={work / 'state'} "
                    f"LCLSTREAM_POSTGRES_PORT={args.postgres_port} bash {POSTGRES} purge"
                    if args.postgres
                    else ""
                ),
                flush=True,
            )
        else:
            try:
                stack("stop", env, timeout=180)
                cancel_left_jobs(jobs)
            finally:
                if args.postgres:  # the cluster lives outside the state folder: remove it
                    service(POSTGRES, "purge", postgres_env, timeout=180)
                # the transfers' files (~11 GB for 50); the stack's logs only when all went well
                failed = bool(error) or ok != args.transfers
                for part in (out, jobs) if failed else (work,):
                    shutil.rmtree(part, ignore_errors=True)
                if failed:
                    print(f"the stack's logs are kept in {work / 'state'}", flush=True)
    all_ok = int(ok == args.transfers)
    if sampler is None:
        raise SystemExit("the stack did not come up; no figures")
    print(
        f"transfers={args.transfers} runs_ok={ok} deferred_peak={deferred_peak} "
        f"running_peak={running_peak} triggerer_cpu_s={cpu_s:.1f} "
        f"triggerer_rss_mb={sampler.peak_rss / 2**20:.0f} "
        f"triggerer_rss_start_mb={sampler.start_rss / 2**20:.0f} wall_s={wall:.0f} db={db} "
        f"all_ok={all_ok}" + (f" error={error.replace(' ', '_')}" if error else "")
    )
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
