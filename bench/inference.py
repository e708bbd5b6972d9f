"""Streaming PeakNet inference: frames/s through the whole path against P fed from memory.

Whole path: ``mpiexec -n RANKS lclstreamer`` (synthetic frames with planted peaks) ->
``lclstream-buffer`` -> S (reader actors: HDF5 parse, pad) -> Q1 -> P (PeakNet) -> W (CXI).
Memory ("random mode" of peaknet-pipeline-ray): the same P stage, the same number of batches of
the same frames (already padded), put on Q1 from memory: no socket, no parsing. Both run on one
local Ray, with the same model and the same settings, one after the other (``--rounds``
alternates them; the figures are medians). frames/s counts from the first batch on Q1 to the
last batch written, so Ray and model start-up are outside it.

Examples:

    .venv/bin/python bench/inference.py                      # defaults below, CPU
    .venv/bin/python bench/inference.py --events 256 --rounds 3 --model tiny
    .venv/bin/python bench/inference.py --device cuda --p-actors 1 --height 512 --width 512

Ends with one line of ``key=value`` headline figures: ``ratio`` (whole path / memory; goal
>= 0.9, the socket must not starve the model), frames/s of each, the whole path's Q1 mean
occupancy and the share of samples with Q1 empty, and ms per batch in S, P and W.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

BIN = Path(sys.executable).parent
MODELS: dict[str, dict[str, Any]] = {
    # ConvNeXt V2 "atto" widths and depths, a narrow BiFPN and head: ~0.8 s per 16 images of
    # 256 x 256 on one core of the development machine
    "atto": {
        "backbone": {
            "num_channels": 1,
            "hidden_sizes": [40, 80, 160, 320],
            "depths": [2, 2, 6, 2],
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        },
        "bifpn": {"num_blocks": 1, "block": {"num_features": 64}},
        "seg_head": {"num_groups": 16, "out_channels": 64},
    },
    # the tests' model: the model costs almost nothing, so S and the socket dominate
    "tiny": {
        "backbone": {
            "num_channels": 1,
            "hidden_sizes": [8, 16, 32, 64],
            "depths": [1, 1, 1, 1],
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        },
        "bifpn": {"num_blocks": 1, "block": {"num_features": 16}},
        "seg_head": {"num_groups": 4, "out_channels": 16},
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/inference.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", choices=sorted(MODELS), default="atto", help="model size (atto)")
    p.add_argument("--ranks", type=int, default=2, help="streamer MPI ranks (2)")
    p.add_argument("--events", type=int, default=64, help="events per rank (64)")
    p.add_argument("--shape", default="2,240,250", help="frame shape: panels,H,W (2,240,250)")
    p.add_argument("--img-per-file", type=int, default=8, help="events per message (8)")
    p.add_argument("--height", type=int, default=256, help="model input height (256)")
    p.add_argument("--width", type=int, default=256, help="model input width (256)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per batch (8)")
    p.add_argument("--readers", type=int, default=2, help="S actors (2)")
    p.add_argument("--p-actors", type=int, default=1, help="P actors (1)")
    p.add_argument("--q1-size", type=int, default=8, help="batches Q1 holds (8)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--rounds", type=int, default=1, help="memory/buffer pairs; medians (1)")
    args = p.parse_args(argv)
    try:
        args.shape = tuple(int(n) for n in args.shape.split(","))
        assert len(args.shape) == 3 and min(args.shape) > 0
    except (ValueError, AssertionError):
        p.error(f"--shape {args.shape!r}: expected three positive integers, e.g. 2,240,250")
    if args.events * args.ranks < args.batch_size:
        p.error("--events x --ranks must make at least one batch")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_consumers(port: int, count: int, timeout_s: float = 120.0) -> None:
    """Poll the buffer's ``/stats`` until ``count`` readers are connected."""
    import httpx

    from airflow_provider_lclstream.buffer.stats import parse_stats

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stats = parse_stats(httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json())
            if stats.consumers.connected >= count:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.05)
    raise TimeoutError(f"{count} readers did not connect to the buffer within {timeout_s} s")


def settings_for(args: argparse.Namespace, model: Any, checkpoint: Path, out: Path,
                 url: str | None) -> Any:  # fmt: skip
    from airflow_provider_lclstream.inference.config import PipelineSettings

    return PipelineSettings(
        url=url, readers=args.readers, batch_size=args.batch_size, height=args.height,
        width=args.width, q1_size=args.q1_size, p_actors=args.p_actors, device=args.device,
        model=model, checkpoint=str(checkpoint), out=str(out), timeout_s=120,
    )  # fmt: skip


def memory_frames(args: argparse.Namespace) -> np.ndarray:
    """One batch of the streamer's own synthetic frames, padded to the model's input."""
    from airflow_provider_lclstream.streamer.pipelines.padding import pad_crop
    from airflow_provider_lclstream.streamer.sources.synthetic import SyntheticFrames

    frames = SyntheticFrames(args.shape)
    batch = np.empty((args.batch_size, args.shape[0], args.height, args.width), np.float32)
    for i in range(args.batch_size):
        pad_crop(frames.frame(i), args.height, args.width, out=batch[i])
    return batch


def run_memory(args: argparse.Namespace, model: Any, checkpoint: Path, work: Path) -> Any:
    from airflow_provider_lclstream.inference.pipeline import run_pipeline

    total = args.events * args.ranks
    batches = total // args.batch_size
    settings = settings_for(args, model, checkpoint, work / "memory", None)
    return run_pipeline(settings, memory=(memory_frames(args), batches))


def run_buffer(args: argparse.Namespace, model: Any, checkpoint: Path, work: Path) -> Any:
    from airflow_provider_lclstream.inference.pipeline import run_pipeline

    inp, out = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    metrics = free_port()
    work.mkdir(parents=True, exist_ok=True)
    log = (work / "buffer.log").open("w")
    buffer = subprocess.Popen(
        [BIN / "lclstream-buffer", "--input", inp, "--output", out, "--expect-producers",
         str(args.ranks), "--metrics", f"127.0.0.1:{metrics}", "--drain-timeout", "10"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    settings = settings_for(args, model, checkpoint, work / "buffer", out)
    result: list[Any] = []
    failure: list[BaseException] = []

    def pipeline() -> None:
        try:
            result.append(run_pipeline(settings))
        except BaseException as err:  # reported below
            failure.append(err)

    runner = threading.Thread(target=pipeline, daemon=True)
    runner.start()
    try:
        wait_consumers(metrics, args.readers)  # every reader connected before data flows
        config = {
            "event_source": {"type": "InternalEventSource",
                             "number_of_events_to_generate": args.events},
            "data_sources": {"detector_data": {"type": "SyntheticDetector",
                                               "shape": list(args.shape)}},
            "processing_pipeline": {"type": "BatchProcessingPipeline",
                                    "batch_size": args.img_per_file},
            "data_serializer": {"type": "HDF5BinarySerializer",
                                "fields": {"detector_data": "/data/data"}},
            "data_handlers": [{"type": "BinaryDataStreamingDataHandler", "urls": [inp],
                               "library": "zmq", "role": "client"}],
        }  # fmt: skip
        path = work / "streamer.yaml"
        path.write_text(yaml.safe_dump(config))
        streamer = subprocess.run(
            [BIN / "mpiexec", "-n", str(args.ranks), BIN / "lclstreamer", "-c", path],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if streamer.returncode != 0:
            raise RuntimeError(f"lclstreamer failed:\n{streamer.stderr[-3000:]}")
        runner.join(600)
        if failure:
            raise failure[0]
        if not result:
            raise RuntimeError("the pipeline did not finish within 600 s")
        if buffer.wait(60) != 0:
            raise RuntimeError(f"lclstream-buffer failed: {(work / 'buffer.log').read_text()}")
        return result[0]
    finally:
        if buffer.poll() is None:
            buffer.terminate()
        log.close()


def line(name: str, summary: Any) -> str:
    t, q = summary.stage_s_per_batch, summary.q1
    return (
        f"{name:<7}{summary.frames_inferred:>5} frames {summary.frames_per_s:>7.2f} frames/s | "
        f"Q1 mean {q.mean:.2f}/{q.capacity} (empty {q.empty_fraction:.0%}) | per batch: "
        f"S {t.s * 1e3:.1f} ms, S blocked on Q1 {t.s_wait * 1e3:.0f} ms, P {t.p * 1e3:.0f} ms, "
        f"W {t.w * 1e3:.1f} ms | {summary.batches} batches, {summary.elapsed_s:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from airflow_provider_lclstream.inference.checkpoint import random_checkpoint
    from airflow_provider_lclstream.inference.config import PeakNetModelConfig
    from airflow_provider_lclstream.inference.pipeline import start_ray

    model = PeakNetModelConfig.model_validate(MODELS[args.model])
    print(f"model {args.model}, frames {args.shape} -> {args.height}x{args.width}, "
          f"{args.ranks}x{args.events} events, batches of {args.batch_size}, "
          f"{args.readers} readers, {args.p_actors} P actors, {args.device}")  # fmt: skip
    runs: dict[str, list[Any]] = {"memory": [], "buffer": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = random_checkpoint(model, work / "model.safetensors")
        start_ray()
        for n in range(args.rounds):
            for name, run in (("memory", run_memory), ("buffer", run_buffer)):
                summary = run(args, model, checkpoint, work / f"{name}{n}")
                if not summary.ok:
                    print(summary.model_dump_json(indent=1))
                    return 1
                expected = args.events * args.ranks
                if name == "buffer":
                    assert summary.frames_in == summary.frames_inferred == expected, summary
                runs[name].append(summary)
                print(line(name, summary), flush=True)
    memory = statistics.median(s.frames_per_s for s in runs["memory"])
    whole = statistics.median(s.frames_per_s for s in runs["buffer"])
    buffer_runs = runs["buffer"]
    figures = {
        "ratio": whole / memory,
        "fps": whole,
        "memory_fps": memory,
        "q1_mean": statistics.median(s.q1.mean for s in buffer_runs),
        "q1_empty": statistics.median(s.q1.empty_fraction for s in buffer_runs),
        "memory_q1_mean": statistics.median(s.q1.mean for s in runs["memory"]),
        "s_ms": statistics.median(s.stage_s_per_batch.s for s in buffer_runs) * 1e3,
        "p_ms": statistics.median(s.stage_s_per_batch.p for s in buffer_runs) * 1e3,
        "memory_p_ms": statistics.median(s.stage_s_per_batch.p for s in runs["memory"]) * 1e3,
        "w_ms": statistics.median(s.stage_s_per_batch.w for s in buffer_runs) * 1e3,
    }
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    print(" ".join(f"{k}={v:.1f}" if k.endswith("_ms") else f"{k}={v:.2f}"
                   for k, v in figures.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
