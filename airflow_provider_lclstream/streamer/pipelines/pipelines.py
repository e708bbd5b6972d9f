"""Pipelines: NoOp (one event per message), Batch (stack along axis 0), PeakNet preprocessing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from airflow_provider_lclstream.streamer.pipelines.padding import PAD_STYLES, pad_crop
from airflow_provider_lclstream.streamer.pipelines.steps import Event

if TYPE_CHECKING:
    from airflow_provider_lclstream.config.streamer_components import (
        BatchProcessingPipeline,
        NoOpProcessingPipeline,
        PeaknetPreprocessingPipeline,
    )

Step = Callable[[Event], Event | None]


class ProcessingPipeline:
    """Apply steps to each event, then group events into batches (``batch_size`` 1: no stacking).

    ``dropped`` counts events removed by a step (e.g. the hit filter).
    """

    def __init__(self, steps: Sequence[Step] = (), batch_size: int = 1, stack: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.steps = list(steps)
        self.batch_size = batch_size
        self.stack = stack
        self.dropped = 0
        self.stacker = BatchStacker()

    def transform(self, event: Event) -> Event | None:
        for step in self.steps:
            result = step(event)
            if result is None:
                self.dropped += 1
                return None
            event = result
        return event

    def batches(self, events: Iterable[Event]) -> Iterator[tuple[Mapping[str, np.ndarray], int]]:
        """Yield ``(batch, number_of_events)``; the final partial batch is flushed."""
        pending: list[Event] = []
        for event in events:
            kept = self.transform(event)
            if kept is None:
                continue
            if not self.stack:
                yield kept, 1
                continue
            pending.append(kept)
            if len(pending) == self.batch_size:
                yield PendingBatch(pending, self.stacker), len(pending)
                pending = []
        if pending:
            yield PendingBatch(pending, self.stacker), len(pending)


def stack_events(events: list[Event]) -> Event:
    """Stack each data source along a new axis 0."""
    return {name: np.stack([np.asarray(e[name]) for e in events]) for name in events[0]}


class PendingBatch(Mapping[str, np.ndarray]):
    """Events not yet stacked: a value is stacked along axis 0 when first read.

    A serializer that writes each event's part straight into its message (the HDF5 template)
    reads ``parts`` and ``layout`` instead, which saves copying the whole batch once more.
    """

    def __init__(self, events: list[Event], stacker: BatchStacker | None = None) -> None:
        self.events = events
        self.stacker = stacker or BatchStacker()
        self.stacked: Event = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.stacked:
            if name not in self.events[0]:
                raise KeyError(name)
            self.stacked[name] = self.stacker.stack(name, self.parts(name))
        return self.stacked[name]

    def __contains__(self, name: object) -> bool:
        return name in self.events[0]  # Mapping's default would stack the value to find it

    def __iter__(self) -> Iterator[str]:
        return iter(self.events[0])

    def __len__(self) -> int:
        return len(self.events[0])

    def parts(self, name: str) -> list[np.ndarray]:
        """The events' values of ``name``, in order (the rows of the stacked array)."""
        return [np.asarray(event[name]) for event in self.events]

    def layout(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of the stacked ``name``, without stacking it."""
        parts = self.parts(name)
        shape = parts[0].shape
        if any(part.shape != shape for part in parts):
            raise ValueError(f"{name}: events have different shapes, they cannot be stacked")
        return (len(parts), *shape), np.result_type(*parts)


class BatchStacker:
    """Stack events into buffers kept across batches (no new allocation per batch).

    A batch is valid until the next one is made: the engine serializes (copies) it at once.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def __call__(self, events: list[Event]) -> Event:
        return {name: self.stack(name, [np.asarray(e[name]) for e in events]) for name in events[0]}

    def stack(self, name: str, parts: list[np.ndarray]) -> np.ndarray:
        if any(part.shape != parts[0].shape for part in parts):
            raise ValueError(f"{name}: events have different shapes, they cannot be stacked")
        shape = (len(parts), *parts[0].shape)
        dtype = np.result_type(*parts)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self.buffers[name] = np.empty(shape, dtype=dtype)
        for i, part in enumerate(parts):
            buffer[i] = part
        return buffer


class PeaknetPreprocessing:
    """Upstream LCLStreamer's PeakNet preprocessing, as a step on each event before batching.

    Every value that is 2-D in the event is an image: it is zero-padded to ``target_height`` x
    ``target_width`` (``pad_style`` ``center`` or ``bottom-right``; a longer side is kept, as
    upstream does). With ``add_channel_dim`` the image becomes ``(num_channels, H, W)`` (repeated),
    so the stacked batch is ``(B, C, H, W)``: the same array upstream makes by adding the channel
    axis to each ``(B, H, W)`` batch. Values of any other rank pass through unchanged.
    """

    def __init__(
        self,
        target_height: int,
        target_width: int,
        pad_style: str = "center",
        add_channel_dim: bool = True,
        num_channels: int = 1,
    ) -> None:
        if pad_style not in PAD_STYLES:
            raise ValueError(
                f"processing_pipeline.pad_style: {pad_style!r} is not one of {list(PAD_STYLES)}"
            )
        for key, value in (
            ("target_height", target_height),
            ("target_width", target_width),
            ("num_channels", num_channels),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"processing_pipeline.{key}: {value!r} is not allowed; "
                    "it must be an integer >= 1"
                )
        if not isinstance(add_channel_dim, bool):
            raise ValueError(
                f"processing_pipeline.add_channel_dim: {add_channel_dim!r} "
                "is not one of [True, False]"
            )
        self.height = target_height
        self.width = target_width
        self.pad_style = pad_style
        self.add_channel_dim = add_channel_dim
        self.num_channels = num_channels

    def __call__(self, event: Event) -> Event | None:
        for name, value in event.items():
            data = np.asarray(value)
            if data.ndim != 2:
                continue
            image = pad_crop(data, self.height, self.width, style=self.pad_style, crop=False)
            if self.add_channel_dim:
                image = np.repeat(image[np.newaxis], self.num_channels, axis=0)
            event[name] = image
        return event


# Engines of the pipeline classes, named in the component registry (config/streamer.py); each
# gets the reduction steps already built from ``spec.steps``.


def noop_pipeline(spec: NoOpProcessingPipeline, steps: list[Step]) -> ProcessingPipeline:
    """One event per message, no stacking."""
    return ProcessingPipeline(steps, batch_size=1, stack=False)


def batch_pipeline(spec: BatchProcessingPipeline, steps: list[Step]) -> ProcessingPipeline:
    return ProcessingPipeline(steps, batch_size=spec.batch_size)


def peaknet_pipeline(spec: PeaknetPreprocessingPipeline, steps: list[Step]) -> ProcessingPipeline:
    pad = PeaknetPreprocessing(
        spec.target_height, spec.target_width, spec.pad_style, spec.add_channel_dim,
        spec.num_channels,
    )  # fmt: skip
    return ProcessingPipeline([*steps, pad], batch_size=spec.batch_size)
