"""S-stage work: a message's frames -> fixed-size float32 batches in the model's input size.

Messages stack events along axis 0. A frame is ``(H, W)``, ``(panels, H, W)`` or, after the
streamer's PeakNet preprocessing, ``(panels, 1, H, W)``. Frames are padded or cropped with the
streamer's own ``pad_crop`` straight into the batch buffer (one copy, with the float conversion).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_provider_lclstream.inference.errors import FrameError
from airflow_provider_lclstream.streamer.pipelines.padding import fit_window, pad_crop

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_lclstream.inference.config import PipelineSettings

Batch = dict[str, Any]  # frames (F, P, H, W) float32, event_id (F,), timestamp (F,), meta


def message_frames(data: dict[str, np.ndarray], field: str, where: str) -> np.ndarray:
    """The frames of one message as ``(events, panels, H, W)`` (a view when possible)."""
    if field not in data:
        raise FrameError(f"{where}: no dataset {field!r} (it has {sorted(data)}); set --field")
    frames = np.asarray(data[field])
    if frames.dtype.kind not in "uif":
        raise FrameError(
            f"{where}: {field} has dtype {frames.dtype}; frames must be integers or floats"
        )
    if frames.ndim == 5:
        if frames.shape[2] != 1:
            raise FrameError(
                f"{where}: {field} has shape {frames.shape}; a channel axis (axis 2) must be 1"
            )
        frames = frames[:, :, 0]
    if frames.ndim == 3:
        frames = frames[:, np.newaxis]
    if frames.ndim != 4 or min(frames.shape[-2:], default=0) < 1:
        raise FrameError(
            f"{where}: {field} has shape {frames.shape}; expected (events, [panels, [1,]] H, W)"
        )
    return frames


def event_ids(attrs: dict[str, Any], count: int, fallback: str) -> list[str]:
    """``producer/seq/i`` for our streamer's messages, else ``fallback/i``."""
    producer, seq = attrs.get("lclstream_producer"), attrs.get("lclstream_seq")
    base = f"{producer}/{seq}" if producer is not None and seq is not None else fallback
    return [f"{base}/{i}" for i in range(count)]


class BatchAssembler:
    """Collect frames from messages into batches of ``batch_size`` frames.

    All frames of a run must have one shape (the first message's, or ``expect_shape``).
    """

    def __init__(
        self, settings: PipelineSettings, name: str, expect_shape: tuple[int, ...] | None = None
    ) -> None:
        self.settings = settings
        self.name = name
        self.shape = expect_shape
        self.batches = 0
        self.frames = 0
        self._buffer: np.ndarray | None = None
        self._ids: list[str] = []
        self._times: list[float] = []

    def add(
        self, frames: np.ndarray, ids: list[str], times: np.ndarray | None, where: str
    ) -> Iterator[Batch]:
        shape = tuple(frames.shape[1:])
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            raise FrameError(
                f"{where}: frames of shape {shape}, but this run's frames are {self.shape}"
            )
        s = self.settings
        for i in range(frames.shape[0]):
            if self._buffer is None:
                self._buffer = np.empty((s.batch_size, shape[0], s.height, s.width), np.float32)
            row = len(self._ids)
            pad_crop(frames[i], s.height, s.width, style=s.pad_style, out=self._buffer[row])
            self._ids.append(ids[i])
            self._times.append(float(times[i]) if times is not None else -1.0)
            if len(self._ids) == s.batch_size:
                yield self._take()

    def flush(self) -> Iterator[Batch]:
        if self._ids:
            yield self._take()

    def _take(self) -> Batch:
        assert self._buffer is not None and self.shape is not None
        n = len(self._ids)
        frames = self._buffer[:n]
        self._buffer = None  # the batch owns it now (no copy)
        batch = make_batch(frames, self._ids, np.asarray(self._times), self.shape,
                           f"{self.name}-b{self.batches}", self.settings)  # fmt: skip
        self.batches += 1
        self.frames += n
        self._ids, self._times = [], []
        return batch


def make_batch(
    frames: np.ndarray,
    ids: list[str],
    times: np.ndarray,
    raw_shape: tuple[int, ...],
    batch_id: str,
    settings: PipelineSettings,
) -> Batch:
    """A batch as sent through Ray's object store (numpy arrays travel zero-copy)."""
    window = fit_window(raw_shape[-2], raw_shape[-1], settings.height, settings.width,
                        settings.pad_style)  # fmt: skip
    return {
        "batch_id": batch_id,
        "frames": frames,
        "event_id": np.asarray(ids, dtype=np.str_),
        "timestamp": times.astype(np.float64),
        "raw_shape": tuple(int(n) for n in raw_shape),
        "window": (window.src_y0, window.src_x0, window.dst_y0, window.dst_x0, window.h, window.w),
    }


def model_input(frames: np.ndarray) -> np.ndarray:
    """``(F, P, H, W)`` -> ``(F * P, 1, H, W)`` (a view): every panel is one model image."""
    return frames.reshape(-1, 1, *frames.shape[-2:])
