"""One owner of the synthetic detectors: config, frame generator and transfer request agree."""

from __future__ import annotations

import inspect
import typing

import pytest

from airflow_provider_lclstream.config import detectors
from airflow_provider_lclstream.config.streamer_components import SyntheticDetector
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.streamer.sources.synthetic import SyntheticFrames


@pytest.mark.parametrize("name", sorted(detectors.DETECTOR_SHAPES))
def test_every_detector_is_a_config_choice_with_its_shape(name: str) -> None:
    assert SyntheticDetector(detector=name).frame_shape == detectors.DETECTOR_SHAPES[name]  # type: ignore[arg-type]


def test_config_and_generator_share_the_defaults() -> None:
    fields = SyntheticDetector.model_fields
    generator = inspect.signature(SyntheticFrames).parameters
    for key in ("dtype", "pedestal", "noise", "peaks_per_frame"):
        assert fields[key].default == generator[key].default, key
    assert (fields["noise"].default, fields["peaks_per_frame"].default) == (5.0, 20)


def test_transfer_request_names_a_known_detector_or_falls_back() -> None:
    def synthetic(name: str) -> SyntheticDetector:
        request = TransferRequest(synthetic=True, events=1, detector_name=name)
        source = request.to_streamer_config("tcp://127.0.0.1:1").data_sources["detector_data"]
        assert isinstance(source, SyntheticDetector)
        return source

    assert synthetic("jungfrau1M").detector == "jungfrau1M"
    fallback = synthetic("pilatus")
    assert fallback.detector is None
    assert fallback.frame_shape == detectors.DETECTOR_SHAPES[detectors.DEFAULT_DETECTOR]
    assert set(typing.get_args(detectors.DetectorName)) == set(detectors.DETECTOR_SHAPES)
    assert detectors.detector_shape("pilatus") is None
