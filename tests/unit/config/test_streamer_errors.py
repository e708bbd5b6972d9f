"""Bad configurations fail with a ConfigError naming the YAML path and what to do."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_lclstream.config.loader import (
    parse_streamer_config,
    render_template,
    validate_streamer_config,
)
from airflow_provider_lclstream.exceptions import ConfigError

FLAT: dict[str, Any] = {
    "source_identifier": "",
    "skip_incomplete_events": False,
    "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": 10},
    "data_sources": {
        "random": {"type": "GenericRandomNumpyArray", "array_shape": "4,4", "array_dtype": "u2"},
        "const": {"type": "ConstValue", "value": 6.4, "dtype": "float64"},
        "frames": {"type": "SyntheticDetector", "detector": "epix10k2M"},
    },
    "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 2},
    "data_serializer": {"type": "HDF5BinarySerializer", "fields": {"random": "/data/random"}},
    "data_handlers": [
        {"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://127.0.0.1:5001"]},
    ],
}

SECTIONED = """
lclstreamer:
    source_identifier: exp=xpptut15:run=430
    event_source: Psana1EventSource
    processing_pipeline: BatchProcessingPipeline
    data_serializer: Hdf5Serializer
    data_handlers: [BinaryFileWritingDataHandler, BinaryDataStreamingDataHandler]
data_sources:
    detector_data: {type: Psana1AreaDetector, psana_name: Jungfrau1M, calibration: false}
event_source:
    Psana1EventSource: {}
processing_pipeline:
    BatchProcessingPipeline: {batch_size: 10}
data_serializer:
    Hdf5Serializer: {compression: zfp, fields: {detector_data: /data/data}}
data_handlers:
    BinaryFileWritingDataHandler:
    BinaryDataStreamingDataHandler: {urls: ["tcp://127.0.0.1:5000"], library: nng}
"""


def _error(change: Callable[[dict[str, Any]], object]) -> ConfigError:
    data = copy.deepcopy(FLAT)
    change(data)
    with pytest.raises(ConfigError) as info:
        validate_streamer_config(data)
    return info.value


def test_valid_base_config() -> None:
    config = validate_streamer_config(FLAT)
    handler = config.data_handlers[0]
    assert (handler.type, handler.model_dump()["role"], handler.model_dump()["library"]) == (
        "BinaryDataStreamingDataHandler",
        "client",
        "zmq",
    )


def test_bad_literal_names_path_and_choices() -> None:
    err = _error(lambda d: d["data_handlers"][0].update(library="foo"))
    assert err.path == "data_handlers[0].library"
    assert str(err) == "data_handlers[0].library: 'foo' is not one of ['nng', 'zmq']"


def test_unknown_class_lists_choices() -> None:
    err = _error(lambda d: d["data_handlers"][0].update(type="KafkaDataHandler"))
    assert err.path == "data_handlers[0].type"
    assert "'KafkaDataHandler'" in err.message
    assert "BinaryDataStreamingDataHandler, BinaryFileWritingDataHandler" in err.message
    err = _error(lambda d: d["data_sources"]["random"].update(type="Psana3Thing"))
    assert err.path == "data_sources.random.type"
    assert "Psana2DetectorInterface" in err.message and "Psana1AreaDetector" in err.message
    err = _error(lambda d: d["event_source"].pop("type"))
    assert err.path == "event_source.type"
    assert "InternalEventSource" in err.message


def test_bad_dtype() -> None:
    err = _error(lambda d: d["data_sources"]["random"].update(array_dtype="float33"))
    assert err.path == "data_sources.random.array_dtype"
    assert "'float33' is not a numpy dtype" in err.message
    err = _error(lambda d: d["data_sources"]["const"].update(dtype="nope"))
    assert err.path == "data_sources.const.dtype"


@pytest.mark.parametrize("shape", ["4,x", "", ",", "4;4", "-1,2", "0,3"])
def test_garbage_array_shape(shape: str) -> None:
    err = _error(lambda d: d["data_sources"]["random"].update(array_shape=shape))
    assert err.path == "data_sources.random.array_shape"


def test_const_value_must_fit_dtype() -> None:
    err = _error(lambda d: d["data_sources"]["const"].update(value="abc"))
    assert err.path == "data_sources.const.value"
    assert "float64" in err.message


def test_unknown_extra_key() -> None:
    err = _error(lambda d: d["data_handlers"][0].update(hwm=10))
    assert err.path == "data_handlers[0].hwm"
    assert "unknown key" in err.message and "urls" in err.message
    err = _error(lambda d: d.update(verbose=True))
    assert err.path == "verbose"
    assert "data_handlers" in err.message


def test_missing_required_keys_all_named() -> None:
    def change(d: dict[str, Any]) -> None:
        d["event_source"].pop("number_of_events_to_generate")
        d["data_handlers"][0].pop("urls")
        d.pop("data_serializer")

    err = _error(change)
    paths = {path for path, _ in err.problems}
    assert paths == {
        "event_source.number_of_events_to_generate",
        "data_handlers[0].urls",
        "data_serializer",
    }
    assert all(message == "missing required key" for _, message in err.problems)
    assert "3 problems" in str(err)


def test_empty_urls_rejected() -> None:
    err = _error(lambda d: d["data_handlers"][0].update(urls=[]))
    assert err.path == "data_handlers[0].urls"


def test_detector_interface_needs_fields_unless_pv() -> None:
    err = _error(
        lambda d: d["data_sources"].update(
            det={"type": "Psana2DetectorInterface", "psana_name": "jf"}
        )
    )
    assert err.path == "data_sources.det.psana_fields"
    pv = copy.deepcopy(FLAT)
    pv["data_sources"]["pv"] = {"type": "Psana2PV", "psana_name": "SIOC:SYS0:ML00:AO192"}
    source = validate_streamer_config(pv).data_sources["pv"]
    assert source.model_dump()["psana_fields"] == []


def test_steps_validate_kind_and_field() -> None:
    def steps(*items: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        return lambda d: d["processing_pipeline"].update(steps=list(items))

    err = _error(steps({"kind": "blur", "field": "frames"}))
    assert err.path == "processing_pipeline.steps[0].kind"
    assert "roi" in err.message
    err = _error(steps({"kind": "roi", "field": "frames", "y0": 5, "y1": 5, "x0": 0, "x1": 2}))
    assert err.path == "processing_pipeline.steps[0]"
    err = _error(steps({"kind": "threshold", "field": "nothing", "value": 3}))
    assert err.path == "processing_pipeline.steps[0].field"
    assert "frames" in err.message
    err = _error(steps({"kind": "binning", "field": "frames", "factor": 2, "mode": "sum"}))
    assert err.path == "processing_pipeline.steps[0].mode"


def test_sectioned_errors_use_sectioned_paths() -> None:
    with pytest.raises(ConfigError) as info:
        parse_streamer_config(SECTIONED.replace("library: nng", "library: ipc"))
    assert info.value.path == "data_handlers.BinaryDataStreamingDataHandler.library"
    with pytest.raises(ConfigError) as info:
        parse_streamer_config(
            SECTIONED.replace("event_source: Psana1EventSource", "event_source: X")
        )
    assert info.value.path == "lclstreamer.event_source"
    assert "Psana2EventSource" in info.value.message
    with pytest.raises(ConfigError) as info:
        parse_streamer_config(
            SECTIONED.replace("    BatchProcessingPipeline: {batch_size: 10}", "    Other: {}")
        )
    assert info.value.path == "processing_pipeline.BatchProcessingPipeline"
    assert "BatchProcessingPipeline: {}" in info.value.message
    with pytest.raises(ConfigError) as info:
        parse_streamer_config(SECTIONED.replace("{batch_size: 10}", "{batch_size: ten}"))
    assert info.value.path == "processing_pipeline.BatchProcessingPipeline.batch_size"


def test_sectioned_header_problems_reported_together() -> None:
    text = SECTIONED.replace("    data_serializer: Hdf5Serializer\n", "    serializer: X\n")
    with pytest.raises(ConfigError) as info:
        parse_streamer_config(text)
    paths = {path for path, _ in info.value.problems}
    assert paths == {"lclstreamer.serializer", "lclstreamer.data_serializer"}


def test_sectioned_parses_with_null_entry_and_aliases() -> None:
    config = parse_streamer_config(SECTIONED)
    assert [h.type for h in config.data_handlers] == [
        "BinaryFileWritingDataHandler",
        "BinaryDataStreamingDataHandler",
    ]
    assert config.data_serializer.type == "HDF5BinarySerializer"
    detector = config.data_sources["detector_data"].model_dump()
    assert detector["psana_fields"] == ["raw"]
    assert detector["legacy_type"] == "Psana1AreaDetector"


def test_yaml_and_document_errors() -> None:
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        parse_streamer_config("a: [1, 2\nb: 3\n")
    assert info.value.path.startswith("line ")
    with pytest.raises(ConfigError, match="empty"):
        parse_streamer_config("# nothing\n")
    with pytest.raises(ConfigError, match="mapping"):
        parse_streamer_config("- a\n- b\n")


def test_render_template() -> None:
    assert render_template("a: {{ x }}\nb: {{ y }}\n", {"x": 1, "y": "two"}) == "a: 1\nb: two\n"
    assert render_template("plain: yes\n") == "plain: yes\n"
    with pytest.raises(ConfigError) as info:
        render_template("a: {{ x }}\nb: {{ y }} {{ z }}\n", {"y": 1})
    assert "x, z" in info.value.message
    with pytest.raises(ConfigError, match="template syntax"):
        render_template("a: {{ x \n", {"x": 1})
