"""Reduction steps, batching (with the final partial batch) and PeakNet preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_peaknet_pads_and_adds_channel() -> None:
    out = PeaknetPreprocessing("img", 8, 5)({"img": np.ones((2, 4, 6))})["img"]
    assert out.shape == (2, 1, 8, 5)
    assert out[0, 0, 7, 0] == 0 and out[0, 0, 0, 4] == 1


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
