"""Pipelines: NoOp (one event per message), Batch (stack along axis 0), PeakNet preprocessing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from airflow_provider_lclstream.streamer.pipelines.padding import pad_crop
from airflow_provider_lclstream.streamer.pipelines.steps import Event

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
    """Pad or crop the detector frames to ``target_height`` x ``target_width`` with a channel axis.

    Frames of shape ``(panels, H, W)`` become ``(panels, 1, target_H, target_W)`` (one channel),
    which is the layout PeakNet inference takes.
    """

    def __init__(self, field: str, target_height: int, target_width: int, pad_value: float = 0):
        self.field = field
        self.height = target_height
        self.width = target_width
        self.pad_value = pad_value

    def __call__(self, event: Event) -> Event | None:
        data = np.asarray(event[self.field])
        if data.ndim == 2:
            data = data[np.newaxis]
        data = pad_crop(data, self.height, self.width, pad_value=self.pad_value)
        event[self.field] = data[:, np.newaxis]
        return event
