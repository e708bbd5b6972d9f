"""Cost of many JobStateTriggers in one event loop (what one triggerer process would carry).

N triggers watch N fake jobs (in-process backend, no I/O) that end at staggered times; each
poll also reads a log chunk. Reports CPU use as % of one core over the run, RSS before and at
peak, polls made, and how late each "job ended" event came. Ends with one line of key=value.

    .venv/bin/python bench/triggers.py [--triggers 100] [--job-seconds 10] [--poll-interval 0.5]

Trigger logging is at WARNING unless AIRFLOW__LOGGING__LOGGING_LEVEL says otherwise (INFO adds
the cost of logging every log chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

import psutil

os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from airflow_provider_lclstream.backends.base import (  # noqa: E402
    BaseJobBackend,
    JobState,
    JobStatus,
    register_backend,
)
from airflow_provider_lclstream.triggers.job_state import JobStateTrigger  # noqa: E402

POLLS = 0


class FakeBackend(BaseJobBackend):
    """A job that runs until ``ends_at`` (epoch seconds) and writes one log line per read."""

    name = "bench-fake"

    def __init__(self, ends_at: float) -> None:
        self.ends_at = ends_at

    async def astate(self, job_id: str) -> JobStatus:
        global POLLS
        POLLS += 1
        if time.time() < self.ends_at:
            return JobStatus(job_id, JobState.RUNNING, "RUNNING")
        return JobStatus(job_id, JobState.COMPLETED, "COMPLETED", 0)

    async def alog_tail(self, job_id: str, offset: int = 0, max_bytes: int = 0):
        line = f"{job_id} progress at offset {offset}\n"
        return line, offset + len(line)


async def main(args: argparse.Namespace) -> dict[str, float]:
    register_backend("bench-fake", FakeBackend)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.time()
    ends = [
        t0 + args.job_seconds * (0.5 + 0.5 * i / max(args.triggers - 1, 1))
        for i in range(args.triggers)
    ]
    triggers = [
        JobStateTrigger(
            f"job-{i}",
            backend="bench-fake",
            backend_kwargs={"ends_at": ends[i]},
            poll_interval=args.poll_interval,
            max_poll_interval=args.max_poll_interval,
        )
        for i in range(args.triggers)
    ]
    lags: list[float] = []
    peak = rss0

    async def watch(i: int, trigger: JobStateTrigger) -> None:
        async for event in trigger.run():
            assert event.payload["status"] == "success", event.payload
            lags.append(time.time() - ends[i])
        await trigger.cleanup()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    cpu0 = proc.cpu_times()
    w0 = time.perf_counter()
    await asyncio.gather(*(watch(i, t) for i, t in enumerate(triggers)))
    wall = time.perf_counter() - w0
    cpu1 = proc.cpu_times()
    sampler.cancel()
    peak = max(peak, proc.memory_info().rss)
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "triggers": args.triggers,
        "events": len(lags),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 3),
        "cpu_pct_one_core": round(100 * cpu / wall, 2),
        "polls": POLLS,
        "cpu_ms_per_poll": round(1000 * cpu / max(POLLS, 1), 3),
        "rss_start_mb": round(rss0 / 2**20, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_delta_mb": round((peak - rss0) / 2**20, 2),
        "lag_median_s": round(statistics.median(lags), 3),
        "lag_max_s": round(max(lags), 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triggers", type=int, default=100)
    parser.add_argument("--job-seconds", type=float, default=10.0)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--max-poll-interval", type=float, default=2.0)
    options = parser.parse_args()
    result = asyncio.run(main(options))
    print(" ".join(f"{k}={v}" for k, v in result.items()))
