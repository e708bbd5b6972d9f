"""Component models on their own: quirks, defaults and the new (non-upstream) classes."""

from __future__ import annotations

import copy

import pytest
from pydantic import TypeAdapter, ValidationError

from airflow_provider_lclstream.config.loader import dump_flat, validate_streamer_config
from airflow_provider_lclstream.config.streamer import (
    BatchProcessingPipeline,
    ConstValue,
    DataSourceConfig,
    GenericRandomNumpyArray,
    HDF5BinarySerializer,
    Hdf5EventSource,
    NoOpProcessingPipeline,
    RoiStep,
    SerializerConfig,
    SyntheticDetector,
)
from airflow_provider_lclstream.exceptions import ConfigError
from tests.unit.config.test_streamer_errors import FLAT

SOURCE = TypeAdapter(DataSourceConfig)
SERIALIZER = TypeAdapter(SerializerConfig)


@pytest.mark.parametrize(
    ("text", "shape"),
    [("32,", (32,)), ("4,4,4", (4, 4, 4)), (" 20, 2 ", (20, 2)), (7, (7,)), ([2, 3], (2, 3))],
)
def test_array_shape_spellings(text: object, shape: tuple[int, ...]) -> None:
    source = SOURCE.validate_python(
        {"type": "GenericRandomNumpyArray", "array_shape": text, "array_dtype": "float32"}
    )
    assert isinstance(source, GenericRandomNumpyArray)
    assert source.array_shape == shape


def test_value_aliases() -> None:
    value = SOURCE.validate_python({"type": "IntValue", "value": 3})
    assert isinstance(value, ConstValue)
    assert (value.value, value.dtype) == (3, "int64")


@pytest.mark.parametrize("spelling", [None, "None", "none", "null"])
def test_compression_none_spellings(spelling: str | None) -> None:
    serializer = SERIALIZER.validate_python(
        {"type": "Hdf5BinarySerializer", "compression": spelling}
    )
    assert isinstance(serializer, HDF5BinarySerializer)
    assert serializer.compression is None
    assert serializer.fields == {}


def test_synthetic_detector_shapes() -> None:
    epix = SyntheticDetector(detector="epix10k2M")
    assert epix.frame_shape == (16, 352, 384)
    assert epix.dtype == "uint16" and epix.seed == 0
    assert SyntheticDetector(detector="jungfrau4M", shape="2,8,8").frame_shape == (2, 8, 8)
    with pytest.raises(ValidationError, match="detector"):
        SyntheticDetector()
    with pytest.raises(ValidationError):
        SyntheticDetector(detector="pilatus")  # type: ignore[arg-type]


def test_hdf5_event_source_accepts_a_glob_and_checks_datasets() -> None:
    data = copy.deepcopy(FLAT)
    data["event_source"] = {"type": "Hdf5EventSource", "files": "/data/run*.h5"}
    source = validate_streamer_config(data).event_source
    assert isinstance(source, Hdf5EventSource)
    assert source.files == ["/data/run*.h5"]
    data["event_source"]["datasets"] = {"ghost": "/entry/data"}
    with pytest.raises(ConfigError) as info:
        validate_streamer_config(data)
    assert info.value.path == "event_source.datasets.ghost"


def test_pipeline_steps_round_trip() -> None:
    data = copy.deepcopy(FLAT)
    data["processing_pipeline"] = {
        "type": "NoOpProcessingPipeline",
        "steps": [
            {"kind": "roi", "field": "frames", "y0": 0, "y1": 64, "x0": 0, "x1": 64},
            {"kind": "threshold", "field": "frames", "value": 120},
            {"kind": "binning", "field": "frames", "factor": 2},
            {"kind": "hit_filter", "field": "frames", "threshold": 150, "min_pixels": 4},
        ],
    }
    config = validate_streamer_config(data)
    pipeline = config.processing_pipeline
    assert isinstance(pipeline, NoOpProcessingPipeline)
    assert [s.kind for s in pipeline.steps] == ["roi", "threshold", "binning", "hit_filter"]
    assert isinstance(pipeline.steps[0], RoiStep)
    assert validate_streamer_config(dump_flat(config)) == config


def test_no_steps_not_dumped_and_patch_leaves_input_alone() -> None:
    data = copy.deepcopy(FLAT)
    config = validate_streamer_config(data, patch={"processing_pipeline.batch_size": 5})
    assert isinstance(config.processing_pipeline, BatchProcessingPipeline)
    assert config.processing_pipeline.batch_size == 5
    assert data == FLAT
    assert "steps" not in dump_flat(config)["processing_pipeline"]
    with pytest.raises(ConfigError) as info:
        validate_streamer_config(data, patch={"data_handlers[3].urls": []})
    assert info.value.path == "data_handlers[3].urls"


def test_simplon_needs_its_data_sources() -> None:
    data = copy.deepcopy(FLAT)
    data["data_serializer"] = {
        "type": "SimplonBinarySerializer",
        "data_source_to_serialize": "jungfrau.raw.calib",
        "polarization_fraction": 0.99,
        "polarization_axis": [1, 0, 0],
        "data_collection_rate": "120Hz",
        "detector_name": "jungfrau",
        "detector_type": "AreaDetector",
    }
    with pytest.raises(ConfigError, match="detector_geometry") as info:
        validate_streamer_config(data)
    assert info.value.path == "data_sources"


def test_peaknet_pipeline_defaults() -> None:
    data = copy.deepcopy(FLAT)
    data["processing_pipeline"] = {
        "type": "PeaknetPreprocessingPipeline",
        "batch_size": 16,
        "target_height": 1920,
        "target_width": 1920,
    }
    dumped = validate_streamer_config(data).processing_pipeline.model_dump()
    assert dumped["pad_style"] == "center"
    assert dumped["add_channel_dim"] is True and dumped["num_channels"] == 1
