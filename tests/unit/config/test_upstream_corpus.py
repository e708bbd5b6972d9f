"""Every upstream LCLStreamer config parses; flat and sectioned versions agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airflow_provider_lclstream.config.loader import (
    dump_flat,
    load_streamer_config,
    parse_streamer_config,
    template_variables,
)
from airflow_provider_lclstream.config.streamer import (
    BatchProcessingPipeline,
    BinaryDataStreamingDataHandler,
    BinaryFileWritingDataHandler,
    HDF5BinarySerializer,
    Psana1DetectorInterface,
    Psana2DetectorInterface,
    SimplonBinarySerializer,
    StreamerConfig,
)
from airflow_provider_lclstream.exceptions import ConfigError
from tests.unit.config._corpus import TEMPLATE_VALUES, corpus_dir, corpus_files

FILES = corpus_files()
LOCAL = {"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://127.0.0.1:5001"]}


def _load(path: Path) -> StreamerConfig:
    text = path.read_text()
    values = TEMPLATE_VALUES if template_variables(text) else None
    return parse_streamer_config(text, values)


def test_corpus_has_both_formats() -> None:
    kinds = {p.parent.name for p in FILES}
    assert kinds == {"flat", "sectioned"}
    assert len(FILES) >= 12


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_upstream_file_parses(path: Path) -> None:
    config = _load(path)
    assert config.data_sources
    assert config.data_handlers


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_dump_flat_round_trips(path: Path) -> None:
    config = _load(path)
    flat = dump_flat(config)
    again = parse_streamer_config(yaml.safe_dump(flat, sort_keys=False))
    assert again == config
    assert "lclstreamer" not in flat
    assert all("type" in flat[k] for k in ("event_source", "processing_pipeline"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_handlers_can_point_at_localhost(path: Path) -> None:
    text = path.read_text()
    values = TEMPLATE_VALUES if template_variables(text) else None
    config = parse_streamer_config(text, values, patch={"data_handlers[0]": LOCAL})
    handler = config.data_handlers[0]
    assert isinstance(handler, BinaryDataStreamingDataHandler)
    assert handler.urls == ["tcp://127.0.0.1:5001"]


def test_template_renders_with_values() -> None:
    path = corpus_dir() / "flat" / "lclstreamer-psana2-simplon.yml"
    config = load_streamer_config(path, TEMPLATE_VALUES)
    serializer = config.data_serializer
    assert isinstance(serializer, SimplonBinarySerializer)
    assert serializer.data_source_to_serialize == "jungfrau.raw.calib"
    assert serializer.polarization_axis == [1.0, 0.0, 0.0]
    assert serializer.polarization_fraction == pytest.approx(0.99)
    assert config.source_identifier == "exp=mfx100852324,run=355"
    geometry = config.data_sources["detector_geometry"]
    assert isinstance(geometry, Psana2DetectorInterface)
    assert geometry.psana_fields == ["_detid", "raw._det_geotxt_default"]
    assert geometry.dtype == "str"
    assert isinstance(config.processing_pipeline, BatchProcessingPipeline)
    assert config.processing_pipeline.batch_size == 1


def test_template_without_values_lists_every_missing_name() -> None:
    path = corpus_dir() / "flat" / "lclstreamer-psana2-simplon.yml"
    with pytest.raises(ConfigError) as info:
        load_streamer_config(path)
    for name in TEMPLATE_VALUES:
        assert name in str(info.value)
    partial = {k: v for k, v in TEMPLATE_VALUES.items() if k not in ("out_url", "batch_size")}
    with pytest.raises(ConfigError, match="batch_size, out_url") as info:
        load_streamer_config(path, partial)
    assert "areadetector_name" not in str(info.value)


def _pair(name: str) -> tuple[StreamerConfig, StreamerConfig]:
    root = corpus_dir()
    return _load(root / "flat" / name), _load(root / "sectioned" / name)


def _source(config: StreamerConfig, name: str) -> dict[str, object]:
    return config.data_sources[name].model_dump(exclude={"legacy_type"})


def test_psana1_flat_and_sectioned_agree() -> None:
    flat, sectioned = _pair("lclstreamer-psana1.yaml")
    assert flat.source_identifier == sectioned.source_identifier == "exp=xpptut15:run=430"
    assert flat.skip_incomplete_events is sectioned.skip_incomplete_events is False
    assert flat.event_source == sectioned.event_source
    assert flat.processing_pipeline == sectioned.processing_pipeline
    assert flat.data_handlers == sectioned.data_handlers
    for name in ("detector_data", "random", "photon_wavelength"):
        assert _source(flat, name) == _source(sectioned, name), name
    detector = sectioned.data_sources["detector_data"]
    assert isinstance(detector, Psana1DetectorInterface)
    assert detector.legacy_type == "Psana1AreaDetector"
    assert detector.psana_fields == ["calib"]
    assert isinstance(sectioned.data_serializer, HDF5BinarySerializer)
    assert isinstance(flat.data_serializer, HDF5BinarySerializer)
    assert flat.data_serializer.compression is None  # `compression:` left empty
    assert sectioned.data_serializer.compression == "zfp"


def test_psana2_mfx_flat_and_sectioned_agree() -> None:
    flat, sectioned = _pair("lclstreamer-psana2-mfx.yaml")
    assert flat.source_identifier == sectioned.source_identifier
    assert flat.skip_incomplete_events is sectioned.skip_incomplete_events is True
    assert flat.event_source == sectioned.event_source
    assert flat.processing_pipeline == sectioned.processing_pipeline
    for name in ("timestamp", "detector_data", "photon_wavelength"):
        assert _source(flat, name) == _source(sectioned, name), name
    assert flat.data_serializer.model_dump(exclude={"fields"}) == (
        sectioned.data_serializer.model_dump(exclude={"fields"})
    )
    assembled = sectioned.data_sources["assembled_detector_data"]
    assert isinstance(assembled, Psana2DetectorInterface)
    assert assembled.psana_fields == ["raw.image"]


def test_psana2_tmo_flat_and_sectioned_agree() -> None:
    flat, sectioned = _pair("lclstreamer-psana2-tmo.yaml")
    assert flat.event_source == sectioned.event_source
    assert flat.processing_pipeline == sectioned.processing_pipeline
    assert flat.data_handlers == sectioned.data_handlers
    assert _source(flat, "timestamp") == _source(sectioned, "timestamp")
    handler = flat.data_handlers[0]
    assert isinstance(handler, BinaryFileWritingDataHandler)
    assert handler.write_directory == "workspace/output"


def test_sectioned_unchosen_handler_is_ignored() -> None:
    # The sectioned files keep a `library: nng` streaming entry that is not chosen.
    _, sectioned = _pair("lclstreamer-psana1.yaml")
    assert [h.type for h in sectioned.data_handlers] == ["BinaryFileWritingDataHandler"]


def test_quynh_legacy_psana1_classes_keep_their_meaning() -> None:
    config = _load(corpus_dir() / "sectioned" / "lclstreamer-quynh.yaml")
    expected = {
        "detector_data": ("Psana1AssembledAreaDetector", ["image"]),
        "ipm2sum": ("Psana1BbmonDetectorTotalIntensity", ["get.TotalIntensity"]),
        "diodeUchannel": ("Psana1IpmDetector", ["channel"]),
        "timetool_ampl": ("Psana1PV", []),
        "usb_encoder_2": ("Psana1UsdUsbDetector", ["values"]),
        "evr_codes": ("Psana1EvrCodes", ["eventCodes"]),
    }
    for name, (legacy, fields) in expected.items():
        source = config.data_sources[name]
        assert isinstance(source, Psana1DetectorInterface), name
        assert (source.legacy_type, source.psana_fields) == (legacy, fields), name


def test_internal_quirks() -> None:
    config = _load(corpus_dir() / "flat" / "lclstreamer-internal.yaml")
    sources = config.data_sources
    assert sources["random_example2"].model_dump()["array_shape"] == (32,)
    assert sources["const_data_example1"].model_dump()["value"] == 6.4
    assert sources["const_data_example2"].model_dump()["value"] == [6, 3, 1]
    assert sources["const_data_example3"].model_dump()["value"] == [6]
    assert sources["const_data_example4"].model_dump()["value"] == [6, 1]
    flat = dump_flat(config)
    assert flat["data_sources"]["random_example2"]["array_shape"] == "32,"


def test_producer_raw_streaming_options() -> None:
    config = _load(corpus_dir() / "flat" / "producer_raw.yaml")
    handler = config.data_handlers[0]
    assert isinstance(handler, BinaryDataStreamingDataHandler)
    assert handler.distribute is True
    assert handler.buffer == 64 * 1024 * 1024
    assert len(handler.urls) == 4
    serializer = config.data_serializer
    assert isinstance(serializer, HDF5BinarySerializer)
    assert serializer.fields == {}
    assert serializer.compression == "gzip"
