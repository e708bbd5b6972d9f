"""Composable per-event reduction steps: ROI crop, threshold, binning, hit filter.

Each step takes one event (``dict[str, ndarray]``) and returns it changed, or None to drop it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airflow_provider_lclstream.exceptions import LCLStreamError

Event = dict[str, np.ndarray]


def _field(event: Event, name: str, step: str) -> np.ndarray:
    if name not in event:
        raise LCLStreamError(
            f"{step} step: data source {name!r} not in the event ({sorted(event)})"
        )
    return np.asarray(event[name])


@dataclass(frozen=True)
class Roi:
    """Keep ``[y0:y1, x0:x1]`` of the last two axes."""

    field: str
    y0: int
    y1: int
    x0: int
    x1: int

    def __call__(self, event: Event) -> Event | None:
        event[self.field] = _field(event, self.field, "roi")[
            ..., self.y0 : self.y1, self.x0 : self.x1
        ]
        return event


@dataclass(frozen=True)
class Threshold:
    """Set pixels below ``value`` to zero."""

    field: str
    value: float

    def __call__(self, event: Event) -> Event | None:
        data = _field(event, self.field, "threshold")
        event[self.field] = np.where(data < self.value, 0, data).astype(data.dtype, copy=False)
        return event


@dataclass(frozen=True)
class Binning:
    """Sum ``factor`` x ``factor`` pixel blocks of the last two axes (edges that don't fit cut)."""

    field: str
    factor: int

    def __call__(self, event: Event) -> Event | None:
        data = _field(event, self.field, "binning")
        f = self.factor
        h, w = data.shape[-2] // f * f, data.shape[-1] // f * f
        cut = data[..., :h, :w]
        binned = cut.reshape(*cut.shape[:-2], h // f, f, w // f, f).sum(axis=(-3, -1))
        event[self.field] = binned
        return event


@dataclass(frozen=True)
class HitFilter:
    """Keep events with at least ``min_pixels`` pixels above ``threshold``."""

    field: str
    threshold: float
    min_pixels: int

    def __call__(self, event: Event) -> Event | None:
        data = _field(event, self.field, "hit_filter")
        return event if int(np.count_nonzero(data > self.threshold)) >= self.min_pixels else None
