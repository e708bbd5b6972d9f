"""Pad or crop detector panels to a model's input size: one implementation for every caller.

The streamer's ``PeaknetPreprocessing`` step and the inference consumer (``inference/``) both fit
panels with ``pad_crop``; ``fit_window`` says where a source panel lands in the target, so a
consumer can map positions found in the model's frame back to detector pixels.

Padding follows upstream LCLStreamer's PeakNet preprocessing: ``center`` puts ``d // 2`` rows
(columns) of the ``d`` missing before the image and the rest after it; ``bottom-right`` puts them
all after. With ``crop=False`` (the streamer, as upstream) a side longer than the target is kept;
the inference consumer crops it (``crop=True``), the middle for ``center``, the start otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np

from airflow_provider_lclstream.config.streamer_components import PadStyle

PAD_STYLES: tuple[str, ...] = get_args(PadStyle)
__all__ = ["PAD_STYLES", "FitWindow", "PadStyle", "fit_window", "pad_crop"]


@dataclass(frozen=True)
class FitWindow:
    """Source rows/columns ``[src_y0:src_y0+h, src_x0:src_x0+w]`` land at ``[dst_y0.., dst_x0..]``.

    A target position ``(y, x)`` is the source position ``(y - offset_y, x - offset_x)``.
    """

    src_y0: int
    src_x0: int
    dst_y0: int
    dst_x0: int
    h: int
    w: int

    @property
    def offset_y(self) -> int:
        return self.dst_y0 - self.src_y0

    @property
    def offset_x(self) -> int:
        return self.dst_x0 - self.src_x0


def _fit_axis(size: int, target: int, style: str) -> tuple[int, int, int]:
    """(source start, target start, length) along one axis."""
    keep = min(size, target)
    if style == "center":
        return (size - keep) // 2, (target - keep) // 2, keep
    return 0, 0, keep


def fit_window(height: int, width: int, target_height: int, target_width: int,
               style: str = "bottom-right") -> FitWindow:  # fmt: skip
    """Where an ``height`` x ``width`` panel goes in the target (``style`` as in ``pad_crop``)."""
    if style not in PAD_STYLES:
        raise ValueError(f"pad_style {style!r} is not one of {list(PAD_STYLES)}")
    sy, dy, h = _fit_axis(height, target_height, style)
    sx, dx, w = _fit_axis(width, target_width, style)
    return FitWindow(sy, sx, dy, dx, h, w)


def pad_crop(
    data: np.ndarray,
    target_height: int,
    target_width: int,
    *,
    style: str = "bottom-right",
    pad_value: float = 0,
    dtype: np.dtype | type | None = None,
    out: np.ndarray | None = None,
    crop: bool = True,
) -> np.ndarray:
    """Fit the last two axes of ``data`` to ``target_height`` x ``target_width``.

    ``bottom-right`` keeps the top-left corner (pads or crops at the end); ``center`` keeps the
    middle. Leading axes are kept. ``out`` (shape ``(*lead, target_height, target_width)``) is
    filled in place instead of allocating, with ``dtype`` converting on the way. ``crop=False``
    only pads: a side already longer than its target keeps its length.
    """
    data = np.asarray(data)
    if data.ndim < 2:
        raise ValueError(f"pad_crop needs at least 2 dimensions, got shape {data.shape}")
    if not crop:
        target_height = max(target_height, data.shape[-2])
        target_width = max(target_width, data.shape[-1])
    lead = data.shape[:-2]
    window = fit_window(data.shape[-2], data.shape[-1], target_height, target_width, style)
    shape = (*lead, target_height, target_width)
    if out is None:
        out = np.empty(shape, dtype=dtype or data.dtype)
    elif out.shape != shape:
        raise ValueError(f"pad_crop: out has shape {out.shape}, expected {shape}")
    w = window
    if w.h < target_height or w.w < target_width:
        out[...] = pad_value
    out[..., w.dst_y0 : w.dst_y0 + w.h, w.dst_x0 : w.dst_x0 + w.w] = data[
        ..., w.src_y0 : w.src_y0 + w.h, w.src_x0 : w.src_x0 + w.w
    ]
    return out
