"""Simplon in upstream LCLStreamer's wire form: fields, bit-exact frames, bad input."""

from __future__ import annotations

import cbor
import numpy as np
import pytest

from airflow_provider_lclstream.config.loader import validate_streamer_config
from airflow_provider_lclstream.exceptions import ConfigError, LCLStreamError
from airflow_provider_lclstream.protocol import EndOfStream, is_end_of_stream
from airflow_provider_lclstream.streamer.engine import Streamer
from airflow_provider_lclstream.streamer.serializers.simplon import (
    ALGORITHM,
    SimplonBinarySerializer,
    decompress_frame,
    parse_shape,
)

RUN_INFO = np.array([["mfxl1047723", "266"]] * 2)
GEOMETRY = np.array([["jungfrau-0123", "geometry text"]] * 2)


def batch(frames: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "detector_data": frames,
        "run_info": RUN_INFO[: len(frames)],
        "detector_geometry": GEOMETRY[: len(frames)],
        "timestamp": np.arange(len(frames), dtype=np.uint64) + 1000,
        "beam_data": np.array([[0.1, 0.2, 0.3, 0.4, 9.5]] * len(frames)),
        "photon_wavelength": np.array([1.3] * len(frames)),
    }


@pytest.mark.parametrize("dtype", ["uint16", "int32", "float32", "float64"])
def test_start_and_images_decode_bit_exact(dtype: str) -> None:
    rng = np.random.default_rng(3)
    frames = (rng.normal(100, 40, (2, 3, 40, 56))).astype(dtype)
    serializer = SimplonBinarySerializer("detector_data", "jungfrau", rank=2)
    b = batch(frames)
    [start_msg] = serializer.header(b)
    images = serializer.messages(b, {})
    assert start_msg[:1] == b"c" and all(m[:1] == b"m" for m in images) and len(images) == 2
    start = cbor.loads(start_msg[1:])  # upstream's own CBOR library
    assert start["type"] == "start" and start["algorithm"] == ALGORITHM == "bitshuffle-lz4"
    assert start["experiment"] == "mfxl1047723" and start["run_number"] == "266"
    assert start["beamline"] == "MFX" and start["datatype"] == dtype
    assert start["shape"] == "3x40x56"
    assert start["detector"]["id"] == "jungfrau-0123"
    assert start["detector"]["geometry"] == "geometry text"
    assert start["message_id"] == 2 * 10**9
    for i, raw in enumerate(images):
        image = cbor.loads(raw[1:])
        assert image["type"] == "image" and image["run"] == "266"
        assert image["timestamp"] == 1000 + i and image["dtype"] == dtype
        assert image["beam_direction"] == {
            "angle_x": 0.1, "angle_y": 0.2, "position_x": 0.3, "position_y": 0.4
        }  # fmt: skip
        assert image["photon_energy"] == 9.5 and image["photon_wavelength"] == 1.3
        decoded = decompress_frame(
            image["compressed_data"], parse_shape(start["shape"]), start["datatype"]
        )
        assert decoded.tobytes() == frames[i].tobytes()  # bit-exact
        assert image["sum"] == pytest.approx(frames[i].sum().item())
        assert image["message_id"] == 2 * 10**9 + 1 + i


def test_end_record_is_a_simplon_stop_and_our_end_of_stream() -> None:
    serializer = SimplonBinarySerializer("detector_data")
    serializer.header(batch(np.zeros((1, 4, 4), np.uint16)))
    record = EndOfStream(producer="h:1/r0", rank=0, events=5, batches=5, messages=7, bytes=99)
    raw = serializer.encode_end(record)
    stop = cbor.loads(raw[1:])
    assert raw[:1] == b"c" and stop["type"] == "stop" and stop["run"] == "266"
    assert isinstance(stop["timestamp"], float)
    assert is_end_of_stream(raw) and EndOfStream.decode(raw) == record


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.array([["a", "b"]]), "'detector_data' is <U1"),
        (np.ones((1, 4, 4), dtype=bool), "'detector_data' is bool"),
        (np.ones((1, 4), dtype=np.uint16), "at least 2 dimensions"),
    ],
)
def test_wrong_image_dtype_names_the_source(frames: np.ndarray, message: str) -> None:
    b = batch(np.zeros((1, 4, 4), np.uint16))
    b["detector_data"] = frames
    with pytest.raises(LCLStreamError, match=message):
        SimplonBinarySerializer("detector_data").header(b)


def config(image: dict, tmp: str, drop: str | None = None) -> dict:
    sources = {
        "timestamp": {"type": "ConstValue", "value": 7, "dtype": "uint64"},
        "detector_data": image,
        "detector_geometry": {"type": "ConstValue", "value": ["id", "geo"], "dtype": "str"},
        "run_info": {"type": "ConstValue", "value": ["mfxl1047723", "266"], "dtype": "str"},
    }
    if drop:
        del sources[drop]
    return {
        "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": 3},
        "data_sources": sources,
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 2},
        "data_serializer": {
            "type": "SimplonBinarySerializer",
            "data_source_to_serialize": "jungfrau.raw.calib",
            "polarization_fraction": 0.99,
            "polarization_axis": [1, 0, 0],
            "data_collection_rate": "120Hz",
            "detector_name": "jungfrau",
            "detector_type": "AreaDetector",
        },
        "data_handlers": [{"type": "BinaryFileWritingDataHandler", "write_directory": tmp}],
    }


@pytest.mark.parametrize("missing", ["run_info", "detector_geometry", "timestamp", "detector_data"])
def test_missing_simplon_source_is_a_config_error_naming_it(tmp_path, missing: str) -> None:  # type: ignore[no-untyped-def]
    image = {"type": "SyntheticDetector", "shape": [4, 4]}
    with pytest.raises(ConfigError, match=f"needs data sources \\['{missing}'\\]"):
        validate_streamer_config(config(image, str(tmp_path), drop=missing))


def test_configured_wrong_dtype_is_a_config_error_naming_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = {"type": "GenericRandomNumpyArray", "array_shape": [4, 4], "array_dtype": "bool"}
    with pytest.raises(ConfigError, match="Simplon image source 'detector_data'") as info:
        validate_streamer_config(config(image, str(tmp_path)))
    assert info.value.path == "data_sources.detector_data.dtype"


def test_runtime_wrong_dtype_fails_before_any_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = {"type": "ConstValue", "value": ["x", "y"]}  # strings: dtype known only at run time
    streamer = Streamer(validate_streamer_config(config(image, str(tmp_path / "out"))))
    with pytest.raises(LCLStreamError, match="'detector_data' is <U1"):
        streamer.run()
    assert streamer.counters.messages == 0
    assert list((tmp_path / "out").iterdir()) == []
