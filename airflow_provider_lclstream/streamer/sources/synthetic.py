"""Synthetic detector frames: pedestal, noise and Bragg-like peaks, seeded and deterministic.

A small pool of noisy frames is made once; each event copies one and adds its own peaks, so
frames are realistic (not constant, not white noise) yet cheap enough for benchmarks. Defaults
and detector shapes live in :mod:`airflow_provider_lclstream.config.detectors`.
"""

from __future__ import annotations

import numpy as np

from airflow_provider_lclstream.config.detectors import (
    SYNTHETIC_DTYPE,
    SYNTHETIC_NOISE,
    SYNTHETIC_PEAK_INTENSITY,
    SYNTHETIC_PEAKS_PER_FRAME,
    SYNTHETIC_PEDESTAL,
)

POOL_SIZE = 4
PEAK_RADIUS = 3


class SyntheticFrames:
    """``frame(i)`` is the same array for the same seed and index, on every host."""

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: str = SYNTHETIC_DTYPE,
        seed: int = 0,
        pedestal: float = SYNTHETIC_PEDESTAL,
        noise: float = SYNTHETIC_NOISE,
        peaks_per_frame: int = SYNTHETIC_PEAKS_PER_FRAME,
        peak_intensity: float = SYNTHETIC_PEAK_INTENSITY,
    ) -> None:
        if len(shape) < 2 or any(n <= 0 for n in shape):
            raise ValueError(f"a detector frame needs >= 2 positive dimensions, got {shape}")
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.peaks = peaks_per_frame
        self.intensity = peak_intensity
        rng = np.random.default_rng(seed)
        limit = np.iinfo(self.dtype).max if self.dtype.kind in "ui" else np.inf
        pool = rng.normal(pedestal, noise, size=(POOL_SIZE, *self.shape))
        self.pool = np.clip(pool, 0, limit).astype(self.dtype)
        yy, xx = np.mgrid[-PEAK_RADIUS : PEAK_RADIUS + 1, -PEAK_RADIUS : PEAK_RADIUS + 1]
        self.spot = np.exp(-(yy**2 + xx**2) / 2.0)
        self.dy = yy[None]
        self.dx = xx[None]
        self.limit = limit

    def frame(self, index: int) -> np.ndarray:
        frame = self.pool[index % POOL_SIZE].copy()
        h, w = self.shape[-2:]
        r = PEAK_RADIUS
        if self.peaks == 0 or h <= 2 * r or w <= 2 * r:
            return frame
        rng = np.random.default_rng((self.seed, index))
        panels = int(np.prod(self.shape[:-2]))
        view = frame.reshape(panels, h, w)
        n = self.peaks
        p = rng.integers(panels, size=n)[:, None, None]
        y = rng.integers(r, h - r, size=n)[:, None, None] + self.dy
        x = rng.integers(r, w - r, size=n)[:, None, None] + self.dx
        scale = rng.uniform(0.2, 1.0, size=n)[:, None, None]
        values = view[p, y, x] + self.spot * self.intensity * scale  # all peaks at once
        view[p, y, x] = np.clip(values, 0, self.limit).astype(self.dtype)
        return frame
