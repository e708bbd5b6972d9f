"""Segmentation -> peaks: connected peak pixels (8-connected, within a panel) become one peak.

A peak's position is its pixels' centroid (as PeakNet's own post-processing does), mapped back
from the model's padded frame to the detector panel; its intensity is the sum of the frame's
values over its pixels. Peaks whose centroid falls in the padding are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Connect neighbours within a panel (axes 1, 2), never across panels (axis 0).
STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
STRUCTURE[1] = True


@dataclass
class Peaks:
    """One frame's peaks, strongest first: panel index, row, column (panel pixels), intensity."""

    panel: np.ndarray
    y: np.ndarray
    x: np.ndarray
    intensity: np.ndarray

    def __len__(self) -> int:
        return len(self.panel)


def find_peaks(
    segmentation: np.ndarray,
    frame: np.ndarray,
    window: tuple[int, int, int, int, int, int],
    peak_class: int = 1,
) -> Peaks:
    """Peaks of one frame: ``segmentation`` (panels, H, W) class indices, ``frame`` the same
    shape (the model's input before normalisation), ``window`` from ``make_batch``."""
    src_y0, src_x0, dst_y0, dst_x0, h, w = window
    mask = segmentation == peak_class
    labels, count = ndimage.label(mask, STRUCTURE)
    if count == 0:
        empty = np.zeros(0, dtype=np.float32)
        return Peaks(np.zeros(0, dtype=np.int32), empty, empty, empty)
    index = np.arange(1, count + 1)
    centres = np.asarray(ndimage.center_of_mass(mask, labels, index), dtype=np.float64)
    intensity = np.asarray(ndimage.sum_labels(frame, labels, index), dtype=np.float64)
    panel = np.rint(centres[:, 0]).astype(np.int32)
    y, x = centres[:, 1], centres[:, 2]
    inside = (
        (y >= dst_y0 - 0.5) & (y < dst_y0 + h - 0.5) & (x >= dst_x0 - 0.5) & (x < dst_x0 + w - 0.5)
    )
    order = np.argsort(-intensity[inside], kind="stable")
    return Peaks(
        panel[inside][order],
        (y[inside] - dst_y0 + src_y0)[order].astype(np.float32),
        (x[inside] - dst_x0 + src_x0)[order].astype(np.float32),
        intensity[inside][order].astype(np.float32),
    )
