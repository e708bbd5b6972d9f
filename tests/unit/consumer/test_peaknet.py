"""The PeakNet consumer's batching: fixed-size float32 batches of padded/cropped panels."""

from __future__ import annotations

import numpy as np

from airflow_provider_lclstream.consumer.peaknet import batches, infer


def test_panels_are_padded_cropped_and_batched() -> None:
    frames = [np.full((2, 3, 700), i, dtype=np.uint16) for i in range(5)]  # 10 panels
    out = list(batches(iter(frames), size=4, height=8, width=512))
    assert [b.shape for b in out] == [(4, 1, 8, 512), (4, 1, 8, 512), (2, 1, 8, 512)]
    assert out[0].dtype == np.float32
    assert out[0][0, 0, 2, 511] == 0 and out[0][0, 0, 3, 0] == 0  # rows padded with zeros
    assert out[2][1, 0, 0, 0] == 4  # the last panel of the last frame
    assert infer(out[2], threshold=3.5) == 2 * 3 * 512
