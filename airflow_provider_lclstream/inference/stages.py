"""The Ray actors: S (``Reader``), P (``Inferencer``), W (``Writer``) and the memory feeder.

Readers parse HDF5 and pad/crop off the model's path, ``ray.put`` each batch once (numpy arrays
are then read zero-copy from the object store) and put ``(kind, id, frames, [ref])`` on Q1, a
bounded ``ray.util.queue.Queue``: a full Q1 blocks ``put`` and so the reader, which stops
pulling from the buffer, which back-pressures the streamer. Every reader ends with an
``("eos", index)`` item, error or not.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.inference.config import PipelineSettings
from airflow_provider_lclstream.inference.frames import (
    BatchAssembler,
    event_ids,
    make_batch,
    message_frames,
    model_input,
)

if TYPE_CHECKING:
    from airflow_provider_lclstream.inference.frames import Batch

log = logging.getLogger(__name__)
#: Test-only hook: ``N`` makes the first incarnation of every P actor exit (``os._exit(1)``, as a
#: killed or crashed process would) at the start of its N-th batch; a restarted actor does not.
#: The driver forwards it from its own environment to the P actors.
CRASH_ENV = "LCLSTREAM_INFER_TEST_CRASH"


class Reader:
    """S stage: one buffer connection, messages -> batches -> Q1."""

    def __init__(self, index: int, settings: dict[str, Any], q1: Any) -> None:
        self.index = index
        self.settings = PipelineSettings.model_validate(settings)
        self.q1 = q1
        self.busy_s = 0.0
        self.wait_s = 0.0

    def _put(self, batch: Batch) -> None:
        import ray

        ref = ray.put(batch)
        started = time.perf_counter()
        self.q1.put(("batch", batch["batch_id"], len(batch["event_id"]), [ref]))
        self.wait_s += time.perf_counter() - started

    def ready(self) -> int:
        return self.index

    def run(self) -> dict[str, Any]:
        from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages

        s = self.settings
        assert s.url is not None
        report = ReceiveReport(1)
        assembler = BatchAssembler(s, f"r{self.index}")
        error: str | None = None
        kind: str | None = None
        try:
            for message in receive_messages(s.url, s.transport, bind=False, expect_producers=1,
                                             timeout_s=s.timeout_s, report=report):  # fmt: skip
                started = time.perf_counter()
                where = f"reader {self.index}, message {message.index}"
                data = message.data
                frames = message_frames(data, s.field, where)
                ids = event_ids(message.attrs, frames.shape[0], f"r{self.index}m{message.index}")
                times = data.get(s.timestamp_field)
                if times is not None and np.shape(times)[:1] != (frames.shape[0],):
                    times = None
                for batch in assembler.add(frames, ids, times, where):
                    self.busy_s += time.perf_counter() - started
                    self._put(batch)
                    started = time.perf_counter()
                self.busy_s += time.perf_counter() - started
            for batch in assembler.flush():
                self._put(batch)
            if report.timed_out:
                kind = "BufferTimeoutError"
                error = (
                    f"reader {self.index}: nothing from {s.url} ({s.transport}) for "
                    f"{s.timeout_s:g} s; {report.messages} messages had arrived. Is the buffer "
                    "running and is this its output URL?"
                )
        except LCLStreamError as err:
            kind, error = type(err).__name__, str(err)
        except Exception as err:  # report, never hang the driver
            kind, error = type(err).__name__, f"reader {self.index}: {err!r}"
        finally:
            self.q1.put(("eos", self.index, 0, []))
        return {
            "reader": self.index,
            "frames": assembler.frames,
            "batches": assembler.batches,
            "busy_s": self.busy_s,
            "wait_s": self.wait_s,
            "report": report.summary(),
            "error": error,
            "error_kind": kind,
        }


class MemoryFeeder:
    """Q1 fed from memory (the anchor's "random mode"): the same frames, no socket, no parsing."""

    def __init__(self, index: int, settings: dict[str, Any], q1: Any) -> None:
        self.index = index
        self.settings = PipelineSettings.model_validate(settings)
        self.q1 = q1

    def run(self, frames: np.ndarray, batches: int) -> dict[str, Any]:
        import ray

        s = self.settings
        wait = 0.0
        for n in range(batches):
            ids = [f"m{self.index}/{n}/{i}" for i in range(frames.shape[0])]
            batch = make_batch(frames, ids, np.full(frames.shape[0], -1.0), frames.shape[1:],
                               f"m{self.index}-b{n}", s)  # fmt: skip
            ref = ray.put(batch)
            started = time.perf_counter()
            self.q1.put(("batch", batch["batch_id"], frames.shape[0], [ref]))
            wait += time.perf_counter() - started
        self.q1.put(("eos", self.index, 0, []))
        total = batches * frames.shape[0]
        return {"reader": self.index, "frames": total, "batches": batches, "busy_s": 0.0,
                "wait_s": wait, "report": None, "error": None, "error_kind": None}  # fmt: skip


class Inferencer:
    """P stage: PeakNet on one GPU (double-buffered) or on CPU threads (a plain loop).

    On GPU two calls run at once (``max_concurrency=2``), each in its own slot of pinned host
    and device buffers: the host-to-device copy of one batch (copy stream) overlaps the model
    on the other (compute stream), and the segmentation comes back on a third stream.
    """

    def __init__(self, index: int, settings: dict[str, Any], device: str) -> None:
        import torch

        from airflow_provider_lclstream.inference.checkpoint import load_model

        self.index = index
        self.settings = s = PipelineSettings.model_validate(settings)
        if s.torch_threads:
            torch.set_num_threads(s.torch_threads)
        self.device = torch.device(device)
        model = load_model(s.model, s.checkpoint).to(self.device)
        self.model = torch.compile(model) if s.compile else model
        self.lock = threading.Lock()
        self.compute_s = 0.0
        self.batches = 0
        self.calls = 0
        self.crash_at = _crash_at()
        self.restarted = _restarted()
        if self.device.type == "cuda":
            self.h2d = torch.cuda.Stream(self.device)
            self.compute = torch.cuda.Stream(self.device)
            self.d2h = torch.cuda.Stream(self.device)
            self.slots: dict[int, dict[str, Any]] = {}
            self.free: queue.Queue[int] = queue.Queue()
            for slot in (0, 1):
                self.free.put(slot)
        self._warm_up()

    def _warm_up(self) -> None:
        """One full-size batch first, so compilation and allocation are not in the timings."""
        s = self.settings
        frames = np.zeros((s.batch_size, 1, s.height, s.width), dtype=np.float32)
        self._forward(frames)

    def ready(self) -> dict[str, Any]:
        return {"index": self.index, "device": str(self.device), "pid": os.getpid()}

    def infer(self, batch: Batch) -> dict[str, Any]:
        self.calls += 1
        if self.calls == self.crash_at:
            log.warning("P actor %d: %s: exiting on batch %s", self.index, CRASH_ENV,
                        batch["batch_id"])  # fmt: skip
            os._exit(1)
        started = time.perf_counter()
        segmentation, logits = self._forward(batch["frames"])
        elapsed = time.perf_counter() - started
        with self.lock:
            self.compute_s += elapsed
            self.batches += 1
        return {
            "batch_id": batch["batch_id"],
            "segmentation": segmentation,
            "logits": logits,
            "p_s": elapsed,
            "pid": os.getpid(),
            "actor": self.index,
            "restarted": self.restarted,
        }

    def _forward(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.device.type == "cuda":
            return self._forward_cuda(frames)
        return self._forward_cpu(frames)

    def _finish(self, logits: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
        import torch

        segmentation = logits.argmax(dim=1).to(torch.uint8)
        return segmentation, logits if self.settings.keep_logits else None

    def _forward_cpu(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        from airflow_provider_lclstream.inference.model import instance_norm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only object-store memory
            x = torch.from_numpy(model_input(frames))
        with torch.inference_mode():
            if self.settings.instance_norm:
                x = instance_norm(x)
            logits = self.model(x)
            segmentation, kept = self._finish(logits, frames.shape)
        f, p = frames.shape[:2]
        seg = segmentation.numpy().reshape(f, p, *frames.shape[-2:])
        out = kept.numpy().reshape(f, p, *kept.shape[1:]) if kept is not None else None
        return seg, out

    def _slot(self, index: int, images: int, shape: tuple[int, ...]) -> dict[str, Any]:
        """Pinned host and device buffers for up to ``images`` images (grown when needed)."""
        import torch

        slot = self.slots.get(index)
        if slot is None or slot["capacity"] < images or slot["shape"] != shape:
            classes = self.settings.model.seg_head.num_classes
            slot = {
                "capacity": images,
                "shape": shape,
                "host_in": torch.empty((images, *shape), dtype=torch.float32).pin_memory(),
                "device_in": torch.empty(
                    (images, *shape), dtype=torch.float32, device=self.device
                ),  # fmt: skip
                "host_seg": torch.empty((images, *shape[-2:]), dtype=torch.uint8).pin_memory(),
                "host_logits": torch.empty(
                    (images, classes, *shape[-2:]), dtype=torch.float32
                ).pin_memory()
                if self.settings.keep_logits
                else None,  # fmt: skip
                "h2d_done": torch.cuda.Event(),
                "compute_done": torch.cuda.Event(),
                "d2h_done": torch.cuda.Event(),
            }
            self.slots[index] = slot
        return slot

    def _forward_cuda(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """UNTESTED here (no GPU on the development machine): written to the CUDA stream rules."""
        import torch

        from airflow_provider_lclstream.inference.model import instance_norm

        images = model_input(frames)
        n = images.shape[0]
        index = self.free.get()
        try:
            slot = self._slot(index, n, tuple(images.shape[1:]))
            host_in = slot["host_in"][:n]
            host_in.numpy()[...] = images  # the one CPU copy: object store -> pinned memory
            device_in = slot["device_in"][:n]
            with torch.cuda.stream(self.h2d):
                device_in.copy_(host_in, non_blocking=True)
                slot["h2d_done"].record(self.h2d)
            with torch.cuda.stream(self.compute), torch.inference_mode():
                self.compute.wait_event(slot["h2d_done"])
                x = instance_norm(device_in) if self.settings.instance_norm else device_in
                logits = self.model(x)
                segmentation, kept = self._finish(logits, frames.shape)
                slot["compute_done"].record(self.compute)
            with torch.cuda.stream(self.d2h):
                self.d2h.wait_event(slot["compute_done"])
                segmentation.record_stream(self.d2h)
                slot["host_seg"][:n].copy_(segmentation, non_blocking=True)
                if kept is not None:
                    kept.record_stream(self.d2h)
                    slot["host_logits"][:n].copy_(kept, non_blocking=True)
                slot["d2h_done"].record(self.d2h)
            slot["d2h_done"].synchronize()
            f, p = frames.shape[:2]
            seg = slot["host_seg"][:n].numpy().reshape(f, p, *frames.shape[-2:]).copy()
            out = None
            if kept is not None:
                out = slot["host_logits"][:n].numpy().reshape(f, p, -1, *frames.shape[-2:]).copy()
            return seg, out
        finally:
            self.free.put(index)


def _restarted() -> bool:
    """Whether Ray restarted this actor (an earlier incarnation died)."""
    import ray

    return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def _crash_at() -> int | None:
    """The batch number :data:`CRASH_ENV` asks this P actor to die on (None: never)."""
    import ray

    value = os.environ.get(CRASH_ENV)
    if not value or ray.get_runtime_context().was_current_actor_reconstructed:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{CRASH_ENV}={value!r}: expected a batch number >= 1")
    return int(value)


class Writer:
    """W stage: segmentation -> peaks per frame -> CXI files."""

    def __init__(self, index: int, settings: dict[str, Any]) -> None:
        from airflow_provider_lclstream.inference.cxi import CxiWriter

        self.settings = s = PipelineSettings.model_validate(settings)
        self.cxi = CxiWriter(
            s.out, f"{s.prefix}_w{index}", events_per_file=s.events_per_file,
            max_peaks=s.max_peaks, save_frames=s.save_frames, keep_logits=s.keep_logits,
            attrs={"lclstream_model_input": [s.height, s.width], "lclstream_pad_style":
                   s.pad_style, "lclstream_min_peaks": s.min_peaks,
                   "lclstream_layout": "panels stacked along slow-scan: ss = panel * H + y"},
        )  # fmt: skip

    def write(self, batch: Batch, result: dict[str, Any]) -> dict[str, Any]:
        from airflow_provider_lclstream.inference.peaks import find_peaks

        started = time.perf_counter()
        s = self.settings
        frames, segmentation = batch["frames"], result["segmentation"]
        window = batch["window"]
        sy0, sx0, dy0, dx0, h, w = window
        hits = peaks_total = rows = 0
        for i in range(frames.shape[0]):
            peaks = find_peaks(segmentation[i], frames[i], window)
            hit = len(peaks) >= s.min_peaks
            hits += int(hit)
            peaks_total += len(peaks)
            if hit or s.all_events:
                frame = None
                if s.save_frames:
                    frame = frames[i, :, dy0 : dy0 + h, dx0 : dx0 + w].reshape(-1, w)
                logits = result["logits"][i] if result["logits"] is not None else None
                self.cxi.append(peaks, str(batch["event_id"][i]), float(batch["timestamp"][i]),
                                h, frame, logits)  # fmt: skip
                rows += 1
        return {
            "batch_id": batch["batch_id"],
            "frames": int(frames.shape[0]),
            "rows": rows,
            "hits": hits,
            "peaks": peaks_total,
            "w_s": time.perf_counter() - started,
            "p_s": result["p_s"],
            "pid": result["pid"],
            "actor": result["actor"],
            "restarted": result.get("restarted", False),
        }

    def close(self) -> dict[str, Any]:
        files = self.cxi.close()
        return {"files": files, "rows": self.cxi.rows, "truncated": self.cxi.truncated}
