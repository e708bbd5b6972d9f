"""Several caches: ``lclstream_transfer`` (``dag.test()``, local backend) with ``buffers: K``.
Streamer rank r sends to buffer r % K, consumer i reads buffer i % K; each buffer expects its
share of the ranks, and the watch sums every buffer's numbers (each kept under ``buffers``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import h5py
import pytest

from tests.dags.dag_runner import load_dag, task_states

pytestmark = [pytest.mark.airflow, pytest.mark.mpi]


@pytest.fixture
def jobs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "jobs"
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(root))
    return root


def run_transfer(
    tmp_path: Path, *, ranks: int, buffers: int, consumers: int, events: int, batch: int
) -> tuple[Any, dict[str, Any], list[Path], float]:
    out = tmp_path / "out"
    request = {
        "synthetic": True,
        "events": events,
        "img_per_file": batch,
        "ranks": ranks,
        "buffers": buffers,
        "consumers": consumers,
        "output_dir": str(out),
        "detector_name": "epix10k2M",
    }
    started = time.monotonic()
    run = load_dag("lclstream_transfer").test(run_conf={"request": request})
    elapsed = time.monotonic() - started
    states = task_states(run)
    assert run.state == "success", states
    stats = run.get_task_instance("watch_transfer").xcom_pull(task_ids="watch_transfer")
    return run, stats, sorted(out.rglob("*.h5")), elapsed


def consumer_buffer(jobs_dir: Path) -> dict[int, str]:
    """Which buffer output URL each consumer job dialed (``--url`` and ``--prefix c<i>`` in its
    script)."""
    dialed = {}
    for job in jobs_dir.iterdir():
        words = (job / "script").read_text().split()
        if any(w.endswith("lclstream-receive") for w in words):
            index = int(words[words.index("--prefix") + 1].removeprefix("c"))
            dialed[index] = words[words.index("--url") + 1]
    return dialed


def test_two_buffers_split_the_ranks_and_the_consumers(jobs_dir: Path, tmp_path: Path) -> None:
    """3 ranks over 2 buffers (ranks 0, 2 -> buffer 0; rank 1 -> buffer 1), 3 consumers
    (0, 2 -> buffer 0; 1 -> buffer 1): 12 events per rank, all 36 arrive exactly once."""
    run, stats, files, _ = run_transfer(
        tmp_path, ranks=3, buffers=2, consumers=3, events=12, batch=5
    )
    buffers = run.get_task_instance("start_buffer").xcom_pull(
        task_ids="start_buffer", key="buffers"
    )
    assert [b["index"] for b in buffers] == [0, 1]
    assert len({b["input_url"] for b in buffers}) == 2
    assert stats["ok"] is True and stats["events"] == 36 and stats["lost"] == 0
    assert stats["producers_ended"] == stats["producers_expected"] == 3
    assert stats["messages"] == 9  # 3 messages (5, 5, 2 events) per rank
    each = stats["buffers"]
    assert [b["producers_expected"] for b in each] == [2, 1]
    assert [b["events"] for b in each] == [24, 12]
    assert sorted(each[0]["per_rank"]) == ["0", "2"] and sorted(each[1]["per_rank"]) == ["1"]
    assert len(files) == 9
    assert sum(h5py.File(f)["/data/data"].shape[0] for f in files) == 36
    urls = [b["output_url"] for b in buffers]
    assert consumer_buffer(jobs_dir) == {0: urls[0], 1: urls[1], 2: urls[0]}


def test_32_ranks_over_2_buffers_to_4_consumers(jobs_dir: Path, tmp_path: Path) -> None:
    """Scale: 32 MPI ranks (oversubscribed on a small machine), 16 per buffer, 4 consumers (2
    per buffer); 3 events per rank in messages of 2: exact counts end to end."""
    run, stats, files, elapsed = run_transfer(
        tmp_path, ranks=32, buffers=2, consumers=4, events=3, batch=2
    )
    assert stats["ok"] is True and stats["lost"] == 0
    assert stats["events"] == 96 and stats["messages"] == 64  # (2 + 1 events) x 32 ranks
    assert stats["producers_ended"] == stats["producers_expected"] == 32
    assert [b["producers_expected"] for b in stats["buffers"]] == [16, 16]
    assert [b["events"] for b in stats["buffers"]] == [48, 48]
    assert sorted(int(r) for r in stats["per_rank"]) == list(range(32))
    assert len(files) == 64
    assert sum(h5py.File(f)["/data/data"].shape[0] for f in files) == 96
    buffers = run.get_task_instance("start_buffer").xcom_pull(
        task_ids="start_buffer", key="buffers"
    )
    urls = [b["output_url"] for b in buffers]
    assert consumer_buffer(jobs_dir) == {0: urls[0], 1: urls[1], 2: urls[0], 3: urls[1]}
    print(f"32 ranks -> 2 buffers -> 4 consumers: dag.test() took {elapsed:.1f} s")
