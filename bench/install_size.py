"""Install time and size: the data path against the full provider, in one run.

    .venv/bin/python bench/install_size.py              # both installs, from the package registry
    .venv/bin/python bench/install_size.py --keep DIR   # keep the venvs under DIR

Each install is a fresh ``python -m venv`` plus plain ``pip install --no-cache-dir`` of this
checkout, so both download everything and build the package once:

- data path: ``.[mpi]`` (lclstreamer, lclstream-buffer, lclstream-receive, consumer libraries,
  MPI), what ``make data-path-venv`` installs;
- full provider: ``.[airflow,mpi]`` with ``apache-airflow==3.3.2`` (the tested version), what an
  Airflow deployment of the provider needs for the same streaming.

Prints seconds, MB on disk and the number of distributions of each, then one ``key=value`` line
with the ratios (data path / full).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = "apache-airflow==3.3.2"


def du_mb(path: Path) -> float:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total / 1e6


def install(venv: Path, *requirements: str) -> dict[str, float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", *requirements], check=True
    )
    seconds = time.perf_counter() - t0
    listed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "seconds": seconds,
        "mb": du_mb(venv),
        "dists": len(json.loads(listed.stdout)),
        "airflow": any(p["name"] == "apache-airflow" for p in json.loads(listed.stdout)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="make the venvs under this directory, keep them")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="lclstream-install-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        data = install(root / "data-path", f"{REPO}[mpi]")
        full = install(root / "full", f"{REPO}[airflow,mpi]", AIRFLOW)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if data["airflow"] or not full["airflow"]:
        print("install_size: unexpected: Airflow in the data path or not in the full install")
        return 1
    for name, r in (("data path [mpi]", data), ("full [airflow,mpi]", full)):
        print(f"{name:20s} {r['seconds']:6.1f} s  {r['mb']:7.1f} MB  {r['dists']:4.0f} dists")
    print(
        f"data_path_s={data['seconds']:.1f} full_s={full['seconds']:.1f} "
        f"data_path_mb={data['mb']:.0f} full_mb={full['mb']:.0f} "
        f"time_ratio={data['seconds'] / full['seconds']:.2f} "
        f"size_ratio={data['mb'] / full['mb']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
