"""The driver: start the actors, move batches Q1 -> P -> W, count everything, summarise.

Q1 is a bounded ``ray.util.queue.Queue``; the driver takes a batch from it only while fewer
than ``p_actors * inflight_per_actor`` batches are in P or waiting for W, so a slow model backs
up into Q1 and from there into the readers and the buffer. Each batch goes to the least busy P
actor, and its result straight to a writer (``writer.write.remote(batch_ref, p_ref)``: Ray
hands the result over when it is ready; the writer's queue of such calls is Q2).

P actors are created with Ray's ``max_restarts`` and ``max_task_retries``: a P actor that dies
is restarted and its batch run again. A batch that still fails is reported in ``lost`` with its
events, and the run fails: frames in must equal frames inferred.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.inference.errors import InferenceError
from airflow_provider_lclstream.inference.summary import (
    InferenceSummary,
    QueueOccupancy,
    StageTimes,
)

if TYPE_CHECKING:
    import numpy as np

    from airflow_provider_lclstream.inference.config import PipelineSettings

log = logging.getLogger(__name__)
NAMESPACE = "lclstream-infer"


def start_ray(
    address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = None
) -> bool:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local Ray; True if started."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": True}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=object_store_mb * 1024 * 1024 if object_store_mb else None,
            **options,
        )
    return True


def resolve_device(wanted: str) -> tuple[str, int]:
    """``(device, gpus per P actor)`` from the cluster's resources."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if wanted == "cuda" and gpus == 0:
        raise InferenceError("--device cuda: the Ray cluster has no GPU")
    if wanted == "cuda" or (wanted == "auto" and gpus > 0):
        return "cuda", gpus
    return "cpu", 0


def run_pipeline(
    settings: PipelineSettings,
    *,
    memory: tuple[np.ndarray, int] | None = None,
    ray_address: str | None = None,
) -> InferenceSummary:
    """Run until every reader saw the end of the stream and every batch is written.

    ``memory=(frames, batches)`` feeds Q1 from memory instead of the buffer (benchmarks).
    Ray is started (or joined) when it is not running, and shut down again if started here.
    """
    import ray
    from ray.util.queue import Queue

    from airflow_provider_lclstream.inference.checkpoint import check_checkpoint
    from airflow_provider_lclstream.inference.stages import (
        CRASH_ENV,
        Inferencer,
        MemoryFeeder,
        Reader,
        Writer,
    )

    if settings.checkpoint is not None:
        check_checkpoint(settings.model, settings.checkpoint)
    if memory is None and not settings.url:
        raise InferenceError("no URL to read from (--url or $LCLSTREAM_URL)")
    started_ray = start_ray(ray_address)
    actors: list[Any] = []
    try:
        device, gpus = resolve_device(settings.device)
        n_p = settings.p_actors or max(gpus, 1)
        plain = settings.model_dump(mode="json")
        q1 = Queue(maxsize=settings.q1_size, actor_options={"num_cpus": 0})
        actors.append(q1.actor)
        p_options: dict[str, Any] = {"max_restarts": settings.max_restarts,
                                     "max_task_retries": settings.max_task_retries}  # fmt: skip
        if os.environ.get(CRASH_ENV):  # test-only: forwarded to the P actors (stages.py)
            p_options["runtime_env"] = {"env_vars": {CRASH_ENV: os.environ[CRASH_ENV]}}
        if device == "cuda":
            p_options.update(num_gpus=1, num_cpus=0, max_concurrency=2)
        else:
            p_options.update(num_cpus=1)
        p_actors: list[Any] = [
            ray.remote(Inferencer).options(**p_options).remote(i, plain, device) for i in range(n_p)
        ]
        actors += p_actors
        try:
            ray.get([a.ready.remote() for a in p_actors])
        except Exception as err:
            raise InferenceError(f"a P actor could not start: {err}") from err
        writers: list[Any] = [
            ray.remote(Writer).options(num_cpus=0).remote(i, plain) for i in range(settings.writers)
        ]
        actors += writers
        if memory is None:
            sources: list[Any] = [
                ray.remote(Reader).options(num_cpus=0).remote(i, plain, q1)
                for i in range(settings.readers)
            ]
            ray.get([r.ready.remote() for r in sources])  # all connect at once, none late
            runs = [r.run.remote() for r in sources]
        else:
            sources = [ray.remote(MemoryFeeder).options(num_cpus=0).remote(0, plain, q1)]
            runs = [sources[0].run.remote(memory[0], memory[1])]
        actors += sources
        return _drive(settings, q1, p_actors, writers, runs, device,
                      "memory" if memory is not None else "buffer")  # fmt: skip
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if started_ray:
            ray.shutdown()


def _drive(
    settings: PipelineSettings,
    q1: Any,
    p_actors: list[Any],
    writers: list[Any],
    runs: list[Any],
    device: str,
    source: str,
) -> InferenceSummary:
    import ray
    from ray.util.queue import Empty

    started = time.monotonic()
    capacity = len(p_actors) * settings.inflight_per_actor
    busy = [0] * len(p_actors)
    pending: dict[Any, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    lost: list[str] = []
    samples: list[int] = []
    ended = 0
    dispatched = 0
    reader_summaries: list[dict[str, Any]] = []
    waiting_runs = list(runs)
    error: str | None = None
    error_kind: str | None = None
    interval = settings.sample_interval_s
    next_sample = 0.0
    first: float | None = None
    while True:
        now = time.monotonic()
        if now >= next_sample:
            samples.append(int(q1.qsize()))
            next_sample = now + interval
        if waiting_runs:
            done, waiting_runs = ray.wait(waiting_runs, num_returns=len(waiting_runs), timeout=0)
            for ref in done:
                summary = ray.get(ref)
                reader_summaries.append(summary)
                if summary["error"] and error is None:
                    error, error_kind = summary["error"], summary["error_kind"]
        if ended < len(runs) and len(pending) < capacity:
            try:
                kind, ident, frames, refs = q1.get(block=True, timeout=interval)
            except Empty:
                kind = None
            if kind == "eos":
                ended += 1
            elif kind == "batch":
                actor = min(range(len(p_actors)), key=busy.__getitem__)
                batch_ref = refs[0]
                p_ref = p_actors[actor].infer.remote(batch_ref)
                w_ref = writers[dispatched % len(writers)].write.remote(batch_ref, p_ref)
                pending[w_ref] = {"batch_id": ident, "frames": frames, "actor": actor}
                busy[actor] += 1
                dispatched += 1
                first = first if first is not None else time.monotonic()
        elif pending:
            ray.wait(list(pending), num_returns=1, timeout=interval)
        if pending:
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in done:
                meta = pending.pop(ref)
                busy[meta["actor"]] -= 1
                try:
                    results.append(ray.get(ref))
                except Exception as err:
                    cause = (str(err).strip().splitlines() or [""])[0][:300]
                    lost.append(f"batch {meta['batch_id']} ({meta['frames']} frames, P actor "
                                f"{meta['actor']}): {type(err).__name__}: {cause}")  # fmt: skip
        if ended == len(runs) and not pending:
            break
    for ref in waiting_runs:
        summary = ray.get(ref)
        reader_summaries.append(summary)
        if summary["error"] and error is None:
            error, error_kind = summary["error"], summary["error_kind"]
    flowing = time.monotonic() - (first if first is not None else started)
    closed = ray.get([w.close.remote() for w in writers])
    elapsed = time.monotonic() - started
    return _summarise(settings, source, device, len(p_actors), reader_summaries, results, closed,
                      lost, samples, elapsed, flowing, error, error_kind)  # fmt: skip


def _summarise(
    settings: PipelineSettings,
    source: str,
    device: str,
    n_p: int,
    readers: list[dict[str, Any]],
    results: list[dict[str, Any]],
    closed: list[dict[str, Any]],
    lost: list[str],
    samples: list[int],
    elapsed: float,
    flowing: float,
    error: str | None,
    error_kind: str | None,
) -> InferenceSummary:
    frames_in = sum(r["frames"] for r in readers)
    frames_inferred = sum(r["frames"] for r in results)
    batches = sum(r["batches"] for r in readers)
    messages = sum(r["report"]["messages"] for r in readers if r["report"])
    announced = [
        p["events"]
        for r in readers
        if r["report"]
        for p in r["report"]["per_producer"].values()
        if p["events"] is not None
    ]
    pids: dict[int, set[int]] = {}
    restarted: set[int] = set()
    for r in results:
        pids.setdefault(r["actor"], set()).add(r["pid"])
        if r.get("restarted"):
            restarted.add(r["actor"])
    # an incarnation whose batches were all still in flight when it died left no result: a
    # restarted actor counts once at least
    restarts = {a: max(len(p) - 1, int(a in restarted)) for a, p in pids.items()}
    n = max(len(results), 1)
    q1 = QueueOccupancy(
        capacity=settings.q1_size,
        samples=len(samples),
        mean=sum(samples) / len(samples) if samples else 0.0,
        mean_fraction=sum(samples) / len(samples) / settings.q1_size if samples else 0.0,
        empty_fraction=sum(1 for s in samples if s == 0) / len(samples) if samples else 0.0,
    )
    if error is None and lost:
        error_kind = "InferenceError"
        error = f"{len(lost)} batches lost after retries: " + "; ".join(lost)
    if error is None and frames_in != frames_inferred:
        error_kind = "InferenceError"
        error = f"frames in ({frames_in}) != frames inferred ({frames_inferred})"
    summary = InferenceSummary(
        ok=error is None and not lost and frames_in == frames_inferred,
        error=error,
        error_kind=error_kind,
        source=source,
        frames_in=frames_in,
        frames_inferred=frames_inferred,
        frames_written=sum(c["rows"] for c in closed),
        hits=sum(r["hits"] for r in results),
        peaks=sum(r["peaks"] for r in results),
        peaks_truncated=sum(c["truncated"] for c in closed),
        files=sorted(f for c in closed for f in c["files"]),
        batches=batches,
        messages=messages,
        buffer_events=max(announced) if announced else None,
        readers=len(readers),
        p_actors=n_p,
        writers=len(closed),
        device=device,
        p_restarts=sum(restarts.values()),
        lost=lost,
        q1=q1,
        stage_s_per_batch=StageTimes(
            s=sum(r["busy_s"] for r in readers) / max(batches, 1),
            s_wait=sum(r["wait_s"] for r in readers) / max(batches, 1),
            p=sum(r["p_s"] for r in results) / n,
            w=sum(r["w_s"] for r in results) / n,
        ),
        elapsed_s=round(elapsed, 3),
        frames_per_s=round(frames_inferred / flowing, 2) if flowing > 0 else 0.0,
    )
    return summary


__all__ = ["run_pipeline", "start_ray"]
