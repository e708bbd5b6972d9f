"""Reduction steps, batching (with the final partial batch) and PeakNet preprocessing."""

from __future__ import annotations

import re

import numpy as np
import pytest

from airflow_provider_lclstream.config.loader import parse_streamer_config
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.streamer.pipelines.pipelines import (
    PeaknetPreprocessing,
    ProcessingPipeline,
)
from airflow_provider_lclstream.streamer.pipelines.steps import Binning, HitFilter, Roi, Threshold
from airflow_provider_lclstream.streamer.sources.synthetic import SyntheticFrames


def events(n: int) -> list[dict[str, np.ndarray]]:
    return [{"img": np.full((4, 6), i, dtype=np.int32), "i": np.int64(i)} for i in range(n)]


def test_batches_stack_and_flush_partial() -> None:
    out = list(ProcessingPipeline(batch_size=3).batches(events(7)))
    assert [size for _, size in out] == [3, 3, 1]
    assert out[0][0]["img"].shape == (3, 4, 6)
    assert list(out[2][0]["i"]) == [6]


def test_noop_passes_single_events() -> None:
    out = list(ProcessingPipeline(batch_size=1, stack=False).batches(events(2)))
    assert out[0][0]["img"].shape == (4, 6)


def test_steps_roi_threshold_binning() -> None:
    image = np.arange(24, dtype=np.int32).reshape(4, 6)
    event = {"img": image.copy()}
    assert Roi("img", 1, 3, 2, 6)(event)["img"].shape == (2, 4)
    event = Threshold("img", 10)({"img": image.copy()})
    assert event["img"].min() == 0 and event["img"][3, 5] == 23
    binned = Binning("img", 2)({"img": image.copy()})["img"]
    assert binned.shape == (2, 3) and binned[0, 0] == 0 + 1 + 6 + 7


def test_hit_filter_drops_and_counts() -> None:
    pipeline = ProcessingPipeline([HitFilter("img", threshold=4.5, min_pixels=1)], batch_size=2)
    out = list(pipeline.batches(events(8)))
    assert sum(size for _, size in out) == 3  # events 5, 6, 7
    assert pipeline.dropped == 5


def test_step_on_missing_field_names_it() -> None:
    with pytest.raises(LCLStreamError, match="'nope'"):
        Threshold("nope", 1)({"img": np.zeros(2)})


def _upstream_reference(images: list[np.ndarray], h: int, w: int, style: str, channel: bool,
                        channels: int) -> np.ndarray:  # fmt: skip
    """Upstream's definition, written out with numpy.pad: pad each image, stack, add channels."""
    padded = []
    for img in images:
        dh, dw = max(h - img.shape[0], 0), max(w - img.shape[1], 0)
        if style == "center":
            width = ((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2))
        else:
            width = ((0, dh), (0, dw))
        padded.append(np.pad(img, width, mode="constant", constant_values=0))
    batch = np.stack(padded)
    if channel:
        batch = np.repeat(np.expand_dims(batch, 1), channels, axis=1)
    return batch


@pytest.mark.parametrize("style", ["center", "bottom-right"])
@pytest.mark.parametrize(("channel", "channels"), [(True, 1), (True, 3), (False, 1), (False, 4)])
def test_peaknet_matches_upstream_per_option(style: str, channel: bool, channels: int) -> None:
    rng = np.random.default_rng(7)
    images = [rng.integers(1, 100, (5, 4)).astype(np.float32) for _ in range(3)]
    step = PeaknetPreprocessing(8, 7, pad_style=style, add_channel_dim=channel,
                                num_channels=channels)  # fmt: skip
    pipeline = ProcessingPipeline([step], batch_size=3)
    events = [{"img": img.copy(), "i": np.int64(k)} for k, img in enumerate(images)]
    [(batch, size)] = list(pipeline.batches(events))
    expected = _upstream_reference(images, 8, 7, style, channel, channels)
    assert size == 3 and batch["img"].shape == expected.shape
    np.testing.assert_array_equal(batch["img"], expected)
    assert list(batch["i"]) == [0, 1, 2]  # not an image: unchanged


def test_peaknet_center_and_bottom_right_differ_where_upstream_says() -> None:
    img = np.ones((2, 3))
    center = PeaknetPreprocessing(5, 6, "center", add_channel_dim=False)({"x": img})["x"]
    corner = PeaknetPreprocessing(5, 6, "bottom-right", add_channel_dim=False)({"x": img})["x"]
    assert np.argwhere(center).min(axis=0).tolist() == [1, 1]  # 3 rows: 1 above, 2 below
    assert np.argwhere(center).max(axis=0).tolist() == [2, 3]
    assert np.argwhere(corner).min(axis=0).tolist() == [0, 0]
    assert np.argwhere(corner).max(axis=0).tolist() == [1, 2]


def test_peaknet_keeps_longer_sides_and_other_ranks_as_upstream() -> None:
    event = {"big": np.ones((9, 2)), "panels": np.ones((2, 4, 6)), "scalar": np.float64(1.5)}
    out = PeaknetPreprocessing(4, 5, "center", num_channels=2)(event)
    assert out["big"].shape == (2, 9, 5)  # height 9 > 4 kept, width padded, 2 channels
    assert out["panels"].shape == (2, 4, 6)  # 3-D: not an image to upstream, unchanged
    assert float(out["scalar"]) == 1.5


@pytest.mark.parametrize(
    ("kwargs", "key", "allowed"),
    [
        ({"pad_style": "left"}, "pad_style", "['bottom-right', 'center']"),
        ({"num_channels": 0}, "num_channels", ">= 1"),
        ({"add_channel_dim": "yes"}, "add_channel_dim", "[True, False]"),
    ],
)
def test_peaknet_option_outside_domain_names_key_and_allowed(
    kwargs: dict[str, object], key: str, allowed: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(key)) as info:
        PeaknetPreprocessing(8, 8, **kwargs)  # type: ignore[arg-type]
    assert allowed in str(info.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("pad_style: left", "pad_style: 'left' is not one of ['bottom-right', 'center']"),
        ("num_channels: 0", "num_channels: Input should be greater than or equal to 1"),
        ("add_channel_dim: maybe", "processing_pipeline.add_channel_dim:"),
    ],
)
def test_peaknet_config_option_outside_domain(line: str, message: str) -> None:
    text = f"""
event_source: {{type: InternalEventSource, number_of_events_to_generate: 2}}
data_sources:
  detector_data: {{type: SyntheticDetector, shape: [4, 6]}}
processing_pipeline:
  type: PeaknetPreprocessingPipeline
  batch_size: 2
  target_height: 8
  target_width: 8
  {line}
data_serializer: {{type: HDF5BinarySerializer}}
data_handlers:
  - {{type: BinaryFileWritingDataHandler, write_directory: /tmp}}
"""
    with pytest.raises(Exception, match=re.escape(message)):
        parse_streamer_config(text)


def test_synthetic_frames_are_deterministic_and_realistic() -> None:
    a = SyntheticFrames((2, 64, 64), seed=3).frame(5)
    b = SyntheticFrames((2, 64, 64), seed=3).frame(5)
    c = SyntheticFrames((2, 64, 64), seed=3).frame(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint16
    assert 80 < np.median(a) < 120  # pedestal with noise
    assert a.max() > 500  # Bragg-like peaks
    with pytest.raises(ValueError):
        SyntheticFrames((0, 5))


def test_pending_batch_reads_like_the_stacked_batch() -> None:
    batch, size = next(ProcessingPipeline(batch_size=3).batches(events(3)))
    assert size == 3 and sorted(batch) == ["i", "img"] and len(batch) == 2
    assert batch.layout("img") == ((3, 4, 6), np.dtype(np.int32))  # type: ignore[attr-defined]
    assert batch.stacked == {}  # type: ignore[attr-defined]
    np.testing.assert_array_equal(batch["img"][2], np.full((4, 6), 2))
    with pytest.raises(KeyError):
        batch["nope"]


def test_events_of_different_shapes_are_refused_with_the_name() -> None:
    mixed = [{"img": np.zeros((2, 2))}, {"img": np.zeros((3, 2))}]
    batch, _ = next(ProcessingPipeline(batch_size=2).batches(mixed))
    with pytest.raises(ValueError, match="img: events have different shapes"):
        batch["img"]


def test_allocator_keeps_freed_memory_on_glibc() -> None:
    import platform

    from airflow_provider_lclstream.streamer.allocator import keep_freed_memory

    accepted = keep_freed_memory()
    assert accepted == (platform.libc_ver()[0] == "glibc")
