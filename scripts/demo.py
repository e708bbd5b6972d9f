"""`make demo`: the main job on embedded defaults, no SLURM or Kafka needed.

Runs the ``lclstream_transfer`` DAG with Airflow's ``dag.test()`` and the local job backend:
a buffer, a consumer writing HDF5 files and a 2-rank MPI streamer (synthetic epix10k2M frames,
or ``--psana`` for an xtc2 file made by psana's xtcwriter). Shows a progress bar, then a summary
(events, MB, MB/s, time to first data, where the files are) and a PNG plot of throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo-output"
HOME = REPO / ".services" / "airflow-demo"
FERNET = "lTpKL4byaE_NjdDMHOZ-qn2doUyI7fpxHLib6CWWggY="  # demo-only; this home holds no secret


def airflow_env() -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__FERNET_KEY": FERNET,
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "LCLSTREAM_JOBS_DIR": str(OUT / "jobs"),
        "LCLSTREAM_PSANA_OFFLINE": "1",
        "LCLSTREAM_TRIGGER_SETTLE_S": "0",  # dag.test() runs triggers inline
    }


def request(args: argparse.Namespace) -> dict:
    common = {"ranks": 2, "consumers": 1, "output_dir": str(OUT / "files")}
    if args.psana:
        sys.path.insert(0, str(REPO))
        from tests.psana_data import write_xtc2

        xtc = write_xtc2(OUT / "data.xtc2", events=args.events)
        return {**common, "files": [str(xtc)], "detector_name": "xppcspad", "img_per_file": 2}
    return {
        **common,
        "synthetic": True,
        "events": args.events,
        "img_per_file": 10,
        "detector_name": "epix10k2M",
        "compression": "bitshuffle_with_lz4",
    }


def inner(conf_path: str, result_path: str) -> int:
    """Run the DAG (in a child process, so Airflow's logs go to a file)."""
    sys.path.insert(0, str(REPO))
    from tests.dags.dag_runner import load_dag, task_states

    dag = load_dag("lclstream_transfer")
    run = dag.test(run_conf=json.loads(Path(conf_path).read_text()))
    ti = run.get_task_instance("watch_transfer")
    stats = ti.xcom_pull(task_ids="watch_transfer") if ti is not None else None
    Path(result_path).write_text(
        json.dumps({"state": str(run.state), "tasks": task_states(run), "stats": stats})
    )
    return 0


def progress(files: Path, expected_events: int, events_per_file: int, started: float) -> str:
    done = min(len(list(files.rglob("*.h5"))) * events_per_file, expected_events)
    bar = "#" * (30 * done // max(expected_events, 1))
    return f"\r[{bar:<30}] ~{done}/{expected_events} events  {time.monotonic() - started:5.1f} s"


def plot(files: Path, started_wall: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    stamps = sorted(
        (f.stat().st_mtime - started_wall, f.stat().st_size) for f in files.rglob("*.h5")
    )
    if not stamps:
        return
    times = np.array([t for t, _ in stamps])
    sizes = np.array([s for _, s in stamps]) / 1e6
    edges = np.arange(0, times.max() + 0.5, 0.5)
    mb, _ = np.histogram(times, bins=edges, weights=sizes)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.step(edges[:-1], mb / 0.5, where="post", label="received MB/s")
    ax.set_xlim(max(0.0, times.min() - 1.0), times.max() + 0.5)
    ax.set_xlabel("seconds since the DAG run started (Airflow and jobs start before data)")
    ax.set_ylabel("MB/s")
    ax.set_title("lclstream_transfer: throughput at the consumer")
    ax2 = ax.twinx()
    ax2.plot(times, np.cumsum(sizes), color="tab:orange", label="cumulative MB")
    ax2.set_ylabel("MB")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100, help="events per rank (100)")
    parser.add_argument("--psana", action="store_true", help="stream an xtc2 file with psana2")
    parser.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return inner(*args.inner)
    if args.events < 1:
        parser.error("--events must be >= 1")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    env = airflow_env()
    migrated = subprocess.run(
        ["bash", str(REPO / "scripts/services/airflow.sh"), "start"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if migrated.returncode != 0:
        print(migrated.stdout + migrated.stderr, file=sys.stderr)
        return 1
    conf = {"request": request(args)}
    (OUT / "conf.json").write_text(json.dumps(conf))
    expected = 2 * (10 if args.psana else args.events)
    per_file = conf["request"]["img_per_file"]
    print(f"lclstream demo: {conf['request'].get('detector_name')} frames, 2 MPI ranks, "
          f"buffer, 1 consumer, Airflow dag.test() (log: {OUT / 'airflow.log'})")  # fmt: skip
    print("starting Airflow, the buffer, the consumer and the MPI streamer ...")
    started, started_wall = time.monotonic(), time.time()
    with open(OUT / "airflow.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, __file__, "--inner", str(OUT / "conf.json"), str(OUT / "result.json")],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        while child.poll() is None:
            print(progress(OUT / "files", expected, per_file, started), end="", flush=True)
            time.sleep(0.25)
    print(progress(OUT / "files", expected, per_file, started))
    if not (OUT / "result.json").exists():
        print(f"the DAG run crashed: see {OUT / 'airflow.log'}", file=sys.stderr)
        return 1
    result = json.loads((OUT / "result.json").read_text())
    stats = result["stats"] or {}
    files = sorted((OUT / "files").rglob("*.h5"))
    first = min((f.stat().st_mtime for f in files), default=None)
    png = OUT / "throughput.png"
    plot(OUT / "files", started_wall, png)
    ok = result["state"].endswith("success") and stats.get("events") == expected
    tasks = ", ".join(f"{k}={v}" for k, v in result["tasks"].items())
    mb = stats.get("bytes", 0) / 1e6
    print(f"  DAG run          : {result['state']}  ({tasks})")
    print(f"  events           : {stats.get('events')} of {expected}, "
          f"skipped {stats.get('skipped')}, lost {stats.get('lost')}")  # fmt: skip
    print(f"  data             : {mb:.1f} MB in {stats.get('messages')} messages")
    print(f"  throughput       : {stats.get('mb_per_s')} MB/s over "
          f"{stats.get('duration_s')} s of streaming")  # fmt: skip
    if first is not None:
        print(f"  time to 1st file : {first - started_wall:.1f} s after the DAG run started")
    print(f"  files            : {len(files)} HDF5 files under {OUT / 'files'}")
    print(f"  plot             : {png}")
    print(
        "  result           : "
        + ("OK, every event delivered" if ok else "FAILED (see airflow.log)")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
