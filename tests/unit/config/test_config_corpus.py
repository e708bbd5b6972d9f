"""Every config of the corpus parses; flat and sectioned versions agree.

The corpus is the project's own (``tests/data/streamer-configs``); when
``$LCLSTREAM_UPSTREAM_CONFIGS`` names a folder of real upstream files, the parse, round-trip and
localhost tests run over those as well (see ``_corpus.py``).
"""

from __future__ import annotations

import re
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
from tests.unit.config._corpus import (
    PROJECT_CORPUS,
    TEMPLATE_VALUES,
    corpus_files,
    labelled_files,
)

FILES = corpus_files(PROJECT_CORPUS)
CASES = [pytest.param(path, id=label) for label, path in labelled_files()]
LOCAL = {"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://127.0.0.1:5001"]}
TEMPLATE = PROJECT_CORPUS / "flat" / "psana2-simplon-template.yml"


def _load(path: Path) -> StreamerConfig:
    text = path.read_text()
    values = TEMPLATE_VALUES if template_variables(text) else None
    return parse_streamer_config(text, values)


def test_corpus_has_both_formats() -> None:
    kinds = {p.parent.name for p in FILES}
    assert kinds == {"flat", "sectioned"}
    assert len(FILES) >= 12


def test_corpus_urls_are_local() -> None:
    # Chosen or not, commented out or not: the project's files never name a real host.
    seen = 0
    for path in [*FILES, None]:
        text = path.read_text() if path else TEMPLATE_VALUES["out_url"]
        hosts = re.findall(r"tcp://([^:/\"\s]+)", text)
        assert set(hosts) <= {"127.0.0.1"}, (path or "TEMPLATE_VALUES", hosts)
        seen += len(hosts)
    assert seen >= 10


@pytest.mark.parametrize("path", CASES)
def test_every_file_parses(path: Path) -> None:
    config = _load(path)
    assert config.data_sources
    assert config.data_handlers


@pytest.mark.parametrize("path", CASES)
def test_dump_flat_round_trips(path: Path) -> None:
    config = _load(path)
    flat = dump_flat(config)
    again = parse_streamer_config(yaml.safe_dump(flat, sort_keys=False))
    assert again == config
    assert "lclstreamer" not in flat
    assert all("type" in flat[k] for k in ("event_source", "processing_pipeline"))


@pytest.mark.parametrize("path", CASES)
def test_handlers_can_point_at_localhost(path: Path) -> None:
    text = path.read_text()
    values = TEMPLATE_VALUES if template_variables(text) else None
    config = parse_streamer_config(text, values, patch={"data_handlers[0]": LOCAL})
    handler = config.data_handlers[0]
    assert isinstance(handler, BinaryDataStreamingDataHandler)
    assert handler.urls == ["tcp://127.0.0.1:5001"]


def test_template_renders_with_values() -> None:
    config = load_streamer_config(TEMPLATE, TEMPLATE_VALUES)
    serializer = config.data_serializer
    assert isinstance(serializer, SimplonBinarySerializer)
    assert serializer.data_source_to_serialize == "epix10k2M.raw.calib"
    assert serializer.polarization_axis == [0.0, 1.0, 0.0]
    assert serializer.polarization_fraction == pytest.approx(0.95)
    assert serializer.data_collection_rate == "30Hz"
    assert config.source_identifier == "exp=mfxl1002223,run=8"
    geometry = config.data_sources["detector_geometry"]
    assert isinstance(geometry, Psana2DetectorInterface)
    assert geometry.psana_name == "epix10k2M"
    assert geometry.psana_fields == ["_detid", "raw._det_geotxt_default"]
    assert geometry.dtype == "str"
    assert isinstance(config.processing_pipeline, BatchProcessingPipeline)
    assert config.processing_pipeline.batch_size == 4
    handler = config.data_handlers[0]
    assert isinstance(handler, BinaryDataStreamingDataHandler)
    assert handler.urls == ["tcp://127.0.0.1:5004"]


def test_template_without_values_lists_every_missing_name() -> None:
    assert template_variables(TEMPLATE.read_text()) == set(TEMPLATE_VALUES)
    with pytest.raises(ConfigError) as info:
        load_streamer_config(TEMPLATE)
    for name in TEMPLATE_VALUES:
        assert name in str(info.value)
    partial = {k: v for k, v in TEMPLATE_VALUES.items() if k not in ("out_url", "batch_size")}
    with pytest.raises(ConfigError, match="batch_size, out_url") as info:
        load_streamer_config(TEMPLATE, partial)
    assert "areadetector_name" not in str(info.value)


def _pair(name: str) -> tuple[StreamerConfig, StreamerConfig]:
    return _load(PROJECT_CORPUS / "flat" / name), _load(PROJECT_CORPUS / "sectioned" / name)


def _source(config: StreamerConfig, name: str) -> dict[str, object]:
    return config.data_sources[name].model_dump(exclude={"legacy_type"})


def test_psana1_flat_and_sectioned_agree() -> None:
    flat, sectioned = _pair("psana1-xpp.yaml")
    assert flat.source_identifier == sectioned.source_identifier == "exp=xppc00121:run=42"
    assert flat.skip_incomplete_events is sectioned.skip_incomplete_events is False
    assert flat.event_source == sectioned.event_source
    assert flat.processing_pipeline == sectioned.processing_pipeline
    assert flat.data_handlers == sectioned.data_handlers
    for name in ("detector_data", "random", "photon_energy"):
        assert _source(flat, name) == _source(sectioned, name), name
    detector = sectioned.data_sources["detector_data"]
    assert isinstance(detector, Psana1DetectorInterface)
    assert detector.legacy_type == "Psana1AreaDetector"
    assert detector.psana_fields == ["calib"]
    energy = sectioned.data_sources["photon_energy"]
    assert isinstance(energy, Psana1DetectorInterface)
    assert (energy.legacy_type, energy.psana_fields) == ("Psana1PV", [])
    assert isinstance(sectioned.data_serializer, HDF5BinarySerializer)
    assert isinstance(flat.data_serializer, HDF5BinarySerializer)
    assert flat.data_serializer.compression is None  # `compression:` left empty
    assert sectioned.data_serializer.compression == "zfp"
    handler = flat.data_handlers[0]
    assert isinstance(handler, BinaryFileWritingDataHandler)
    assert (handler.file_prefix, handler.file_suffix) == ("xppc00121", "h5")


def test_psana2_mfx_flat_and_sectioned_agree() -> None:
    flat, sectioned = _pair("psana2-mfx.yaml")
    assert flat.source_identifier == sectioned.source_identifier
    assert flat.skip_incomplete_events is sectioned.skip_incomplete_events is True
    assert flat.event_source == sectioned.event_source
    assert flat.processing_pipeline == sectioned.processing_pipeline
    for name in ("timestamp", "detector_data", "photon_energy"):
        assert _source(flat, name) == _source(sectioned, name), name
    assert flat.data_serializer.model_dump(exclude={"fields"}) == (
        sectioned.data_serializer.model_dump(exclude={"fields"})
    )
    detector = sectioned.data_sources["detector_data"]
    assert isinstance(detector, Psana2DetectorInterface)
    assert detector.psana_fields == ["raw.raw"]  # `calibration: false`
    assembled = sectioned.data_sources["assembled_detector_data"]
    assert isinstance(assembled, Psana2DetectorInterface)
    assert assembled.psana_fields == ["raw.image"]


def test_psana2_rix_flat_and_sectioned_agree() -> None:
    flat, sectioned = _pair("psana2-rix.yaml")
    assert flat.event_source == sectioned.event_source
    assert flat.processing_pipeline == sectioned.processing_pipeline
    assert flat.data_handlers == sectioned.data_handlers
    assert flat.data_serializer.model_dump(exclude={"fields"}) == (
        sectioned.data_serializer.model_dump(exclude={"fields"})
    )
    assert _source(flat, "timestamp") == _source(sectioned, "timestamp")
    handler = flat.data_handlers[0]
    assert isinstance(handler, BinaryFileWritingDataHandler)
    assert handler.write_directory == "out/rix"


@pytest.mark.parametrize("name", ["psana1-xpp.yaml", "psana2-mfx.yaml", "psana2-rix.yaml"])
def test_sectioned_unchosen_handler_is_ignored(name: str) -> None:
    # The sectioned files keep a `library: nng` streaming entry that is not chosen.
    path = PROJECT_CORPUS / "sectioned" / name
    assert "library: nng" in path.read_text()
    assert [h.type for h in _load(path).data_handlers] == ["BinaryFileWritingDataHandler"]


def test_sectioned_two_chosen_handlers_keep_their_order() -> None:
    config = _load(PROJECT_CORPUS / "sectioned" / "internal-two-handlers.yaml")
    stream, files = config.data_handlers
    assert isinstance(stream, BinaryDataStreamingDataHandler)
    assert stream.urls == ["tcp://127.0.0.1:5005", "tcp://127.0.0.1:5006"]
    assert isinstance(files, BinaryFileWritingDataHandler)
    assert files.write_directory == "out/two-handlers"
    assert config.data_sources["scale"].model_dump()["value"] == 0.5
    assert config.data_sources["count"].model_dump()["value"] == 3


def test_legacy_psana1_classes_keep_their_meaning() -> None:
    config = _load(PROJECT_CORPUS / "sectioned" / "psana1-legacy-classes.yaml")
    expected = {
        "detector_data": ("Psana1AssembledAreaDetector", ["image"]),
        "raw_frames": ("Psana1AreaDetector", ["raw"]),
        "beam_intensity_upstream": ("Psana1BbmonDetectorTotalIntensity", ["get.TotalIntensity"]),
        "diode_channels": ("Psana1IpmDetector", ["channel"]),
        "laser_delay": ("Psana1PV", []),
        "laser_power": ("Psana1PV", []),
        "stage_encoder": ("Psana1UsdUsbDetector", ["values"]),
        "event_codes": ("Psana1EvrCodes", ["eventCodes"]),
    }
    for name, (legacy, fields) in expected.items():
        source = config.data_sources[name]
        assert isinstance(source, Psana1DetectorInterface), name
        assert (source.legacy_type, source.psana_fields) == (legacy, fields), name


def test_internal_quirks() -> None:
    config = _load(PROJECT_CORPUS / "flat" / "internal-random-and-constants.yaml")
    sources = config.data_sources
    assert sources["noise"].model_dump()["array_shape"] == (32,)
    assert sources["gain"].model_dump()["value"] == 2.5
    assert sources["panel_ids"].model_dump()["value"] == [4, 2, 8]
    assert sources["one_panel"].model_dump()["value"] == [7]
    assert sources["two_panels"].model_dump()["value"] == [7, 3]
    flat = dump_flat(config)
    assert flat["data_sources"]["noise"]["array_shape"] == "32,"


def test_distributed_streaming_options() -> None:
    config = _load(PROJECT_CORPUS / "flat" / "psana2-raw-distributed.yaml")
    handler = config.data_handlers[0]
    assert isinstance(handler, BinaryDataStreamingDataHandler)
    assert handler.distribute is True
    assert handler.buffer == 64 * 1024 * 1024
    assert handler.urls == [f"tcp://127.0.0.1:{port}" for port in range(5101, 5105)]
    serializer = config.data_serializer
    assert isinstance(serializer, HDF5BinarySerializer)
    assert serializer.fields == {}
    assert serializer.compression == "gzip"
