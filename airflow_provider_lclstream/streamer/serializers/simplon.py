"""SimplonBinarySerializer: Simplon messages for CCTBX, in two flavors.

``lclstreamer`` (the default) is upstream LCLStreamer's wire form: one header byte then a CBOR
map. ``c`` + ``{"type": "start", ...}`` describes the run and the detector; each frame is one
``m`` + ``{"type": "image", "compressed_data": ..., ...}`` with the frame compressed by
bitshuffle-LZ4 (``bitshuffle.compress_lz4``, block size ``BLOCK_SIZE``: byte-identical to
upstream's, read back with ``bitshuffle.decompress_lz4(data, shape, dtype, BLOCK_SIZE)``);
the stream ends with ``c`` + ``{"type": "stop", ...}`` records that are also our end-of-stream
records (``protocol.EndOfStream.encode_simplon``). Each rank broadcasts its own start message
on every link before its first image, and the ranks send their stop records only after every
rank has sent its last image (the engine's barrier), so every start precedes that rank's images
and every stop follows the last image of all ranks.

``dectris-stream-v2`` is DECTRIS's SIMPLON stream-v2 style: header byte ``S``, ``start`` /
``image`` / ``end`` maps, each frame batch a CBOR multi-dimensional array (RFC 8746 tag 40
around a typed array tag), uncompressed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_provider_lclstream.config import streamer_components as cfg
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.streamer.serializers.base import Serializer

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_lclstream.config.streamer import StreamerConfig
    from airflow_provider_lclstream.protocol import EndOfStream
    from airflow_provider_lclstream.transports.base import Payload

START_HEADER = b"c"
IMAGE_HEADER = b"m"
BLOCK_SIZE = 2**12
"""Bitshuffle block size in elements, as upstream compresses."""
ALGORITHM = "bitshuffle-lz4"
MESSAGE_ID_STRIDE = 10**9
"""``message_id`` is ``rank * MESSAGE_ID_STRIDE + n`` (n counts the rank's messages from 0)."""
BEAM_FIELDS = ("angle_x", "angle_y", "position_x", "position_y")
"""``beam_data`` values, in upstream's order; a fifth value is the ``photon_energy``."""
IMAGE_KINDS = "iuf"
"""Frame dtypes the serializer accepts: signed and unsigned integers, floats."""

SIMPLON_HEADER = b"\x53"  # "S": the stream-v2 flavor
# RFC 8746 typed-array tags, little endian.
TYPED_ARRAY_TAGS = {
    "uint8": 64,
    "uint16": 69,
    "uint32": 70,
    "uint64": 71,
    "int8": 72,
    "int16": 77,
    "int32": 78,
    "int64": 79,
    "float32": 85,
    "float64": 86,
}


def _plain(value: Any) -> Any:
    """A CBOR-encodable Python value from a numpy scalar or array (strings stay strings)."""
    array = np.asarray(value)
    if array.dtype.kind in "US":
        return array.tolist() if array.ndim else str(array)
    if array.dtype.kind == "O":
        return value if array.ndim else array.item()
    return array.tolist() if array.ndim else array.item()


def _strings(value: Any) -> list[str]:
    return [str(v) for v in np.asarray(value).ravel().tolist()]


def compress_frame(frame: np.ndarray) -> bytes:
    """Bitshuffle-LZ4 exactly as upstream LCLStreamer compresses a frame."""
    import bitshuffle

    return bytes(bitshuffle.compress_lz4(np.ascontiguousarray(frame), block_size=BLOCK_SIZE))


def decompress_frame(data: bytes, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Inverse of :func:`compress_frame` (``shape`` and ``dtype`` come from the start message)."""
    import bitshuffle

    raw = np.frombuffer(data, dtype=np.uint8)
    return bitshuffle.decompress_lz4(raw, tuple(shape), np.dtype(dtype), BLOCK_SIZE)  # type: ignore[no-any-return]


def parse_shape(text: str) -> tuple[int, ...]:
    """The start message's ``shape`` (``"512x1024"``) as a tuple."""
    return tuple(int(part) for part in text.split("x"))


class SimplonBinarySerializer(Serializer):
    """Upstream LCLStreamer's Simplon form (``flavor: lclstreamer``); see the module docstring.

    ``image_source`` is the data source whose frames are sent; ``run_info`` ([experiment, run
    number, start time...]), ``detector_geometry`` ([detector id, geometry text, pixel
    coordinates]), ``timestamp``, and when configured ``beam_data`` and ``photon_wavelength``
    fill the messages' fields.
    """

    end_after_all_ranks = True
    batch_axis = True

    def __init__(
        self,
        image_source: str,
        detector_name: str = "detector",
        detector_type: str = "AreaDetector",
        polarization_fraction: float = 0.0,
        polarization_axis: list[float] | None = None,
        data_collection_rate: str = "",
        rank: int = 0,
    ) -> None:
        self.source = image_source
        self.detector_name = detector_name
        self.detector_type = detector_type
        self.polarization = {
            "fraction": polarization_fraction,
            "axis": list(polarization_axis or [1.0, 0.0, 0.0]),
        }
        self.data_collection_rate = data_collection_rate
        self.rank = rank
        self.count = 0
        self.run = ""
        self.layout: tuple[tuple[int, ...], np.dtype] | None = None

    def _message_id(self) -> int:
        self.count += 1
        return self.rank * MESSAGE_ID_STRIDE + self.count - 1

    def check(self, batch: Mapping[str, np.ndarray]) -> None:
        """Refuse a batch without the image source or with a non-numeric one (names it)."""
        if self.source not in batch:
            raise LCLStreamError(
                f"SimplonBinarySerializer: data source {self.source!r} "
                f"(data_source_to_serialize) is not in the event; have {sorted(batch)}"
            )
        frames = np.asarray(batch[self.source])
        if frames.dtype.kind not in IMAGE_KINDS or frames.ndim < 3:
            raise LCLStreamError(
                f"SimplonBinarySerializer: data source {self.source!r} is {frames.dtype} with "
                f"shape {frames.shape[1:]} per event; it must be an integer or float image of at "
                "least 2 dimensions"
            )
        for name in ("run_info", "detector_geometry", "timestamp"):
            if name not in batch:
                raise LCLStreamError(
                    f"SimplonBinarySerializer: data source {name!r} is not in the event; "
                    f"have {sorted(batch)}"
                )

    def header(self, batch: Mapping[str, np.ndarray]) -> list[bytes]:
        """The start message, from the first batch's data sources (sent on every link)."""
        import cbor2

        self.check(batch)
        frames = np.asarray(batch[self.source])
        self.layout = (frames.shape[1:], frames.dtype)
        run_info = _strings(np.asarray(batch["run_info"])[0])
        geometry = _strings(np.asarray(batch["detector_geometry"])[0])
        experiment = run_info[0] if run_info else ""
        self.run = run_info[1] if len(run_info) > 1 else ""
        start_time = run_info[2] if len(run_info) > 2 else _plain(np.asarray(batch["timestamp"])[0])
        message = {
            "type": "start",
            "run_number": self.run,
            "start_time": start_time,
            "duration": "N/A",
            "beamline": experiment[:3].upper(),
            "experiment": experiment,
            "beam_type": "X-ray",
            "polarization": self.polarization,
            "data_collection_rate": self.data_collection_rate,
            "datatype": str(frames.dtype),
            "shape": "x".join(map(str, frames.shape[1:])),
            "algorithm": ALGORITHM,
            "detector": {
                "name": self.detector_name,
                "id": geometry[0] if geometry else "",
                "type": self.detector_type,
                "geometry": geometry[1] if len(geometry) > 1 else "",
                "pixel_coords": geometry[2].encode() if len(geometry) > 2 else "",
                "material": "???",
                "thickness": "???",
            },
            "message_id": self._message_id(),
            "timestamp": time.time(),
        }
        return [START_HEADER + cbor2.dumps(message)]

    def messages(self, batch: Mapping[str, np.ndarray], meta: dict[str, object]) -> list[Payload]:
        """One ``m`` message per event of the batch."""
        import cbor2

        self.check(batch)
        frames = np.asarray(batch[self.source])
        if self.layout is not None and (frames.shape[1:], frames.dtype) != self.layout:
            raise LCLStreamError(
                f"SimplonBinarySerializer: data source {self.source!r} changed from "
                f"{self.layout[1]} {self.layout[0]} to {frames.dtype} {frames.shape[1:]}; the "
                "start message fixed the frame shape and dtype"
            )
        beam = np.asarray(batch["beam_data"]) if "beam_data" in batch else None
        wavelength = batch.get("photon_wavelength")
        out: list[Payload] = []
        for i, frame in enumerate(frames):
            message: dict[str, Any] = {
                "type": "image",
                "run": self.run,
                "compressed_data": compress_frame(frame),
            }
            if beam is not None:
                values = np.asarray(beam[i], dtype=np.float64).ravel().tolist()
                message["beam_direction"] = dict(zip(BEAM_FIELDS, values[:4], strict=False))
                message["photon_energy"] = values[4] if len(values) > 4 else 0
            message["photon_wavelength"] = (
                _plain(np.asarray(wavelength)[i]) if wavelength is not None else 0
            )
            message["dtype"] = str(frame.dtype)
            message["sum"] = frame.sum().item()
            message["message_id"] = self._message_id()
            message["timestamp"] = _plain(np.asarray(batch["timestamp"])[i])
            out.append(IMAGE_HEADER + cbor2.dumps(message))
        return out

    def serialize(self, batch: Mapping[str, np.ndarray], meta: dict[str, object]) -> Payload:
        messages = self.messages(batch, meta)
        if len(messages) != 1:
            raise LCLStreamError("SimplonBinarySerializer.serialize takes one event; use messages")
        return messages[0]

    def encode_end(self, record: EndOfStream) -> bytes:
        return record.encode_simplon(run=self.run)


def cbor_array(value: np.ndarray) -> Any:
    import cbor2

    dtype = np.dtype(value.dtype).newbyteorder("<")
    if dtype.name not in TYPED_ARRAY_TAGS:
        raise LCLStreamError(f"Simplon cannot encode dtype {value.dtype}")
    data = np.ascontiguousarray(value, dtype=dtype).tobytes()
    return cbor2.CBORTag(40, [list(value.shape), cbor2.CBORTag(TYPED_ARRAY_TAGS[dtype.name], data)])


def decode_cbor_array(tag: Any) -> np.ndarray:
    """Inverse of ``cbor_array`` (for tests and Python consumers)."""
    shape, typed = tag.value
    name = {v: k for k, v in TYPED_ARRAY_TAGS.items()}[typed.tag]
    return np.frombuffer(typed.value, dtype=np.dtype(name).newbyteorder("<")).reshape(shape)


class SimplonStreamV2Serializer(Serializer):
    """The DECTRIS stream-v2 style flavor (``flavor: dectris-stream-v2``)."""

    def __init__(
        self,
        data_source_to_serialize: str,
        detector_name: str = "detector",
        detector_type: str = "AreaDetector",
        polarization_fraction: float = 0.0,
        polarization_axis: list[float] | None = None,
        data_collection_rate: str = "",
        series_id: int = 1,
    ) -> None:
        self.source = data_source_to_serialize
        self.header_fields = {
            "detector_name": detector_name,
            "detector_type": detector_type,
            "polarization_fraction": polarization_fraction,
            "polarization_axis": list(polarization_axis or [1.0, 0.0, 0.0]),
            "data_collection_rate": data_collection_rate,
        }
        self.series_id = series_id
        self.image_id = 0

    def _encode(self, message: dict[str, Any]) -> bytes:
        import cbor2

        return SIMPLON_HEADER + cbor2.dumps(message)

    def start(self) -> list[bytes]:
        return [self._encode({"type": "start", "series_id": self.series_id, **self.header_fields})]

    def serialize(self, batch: Mapping[str, np.ndarray], meta: dict[str, object]) -> bytes:
        if self.source not in batch:
            raise LCLStreamError(
                f"Simplon: data source {self.source!r} not in the event (have {sorted(batch)})"
            )
        frames = np.asarray(batch[self.source])
        message: dict[str, Any] = {
            "type": "image",
            "series_id": self.series_id,
            "image_id": self.image_id,
            "data": {"threshold_1": cbor_array(frames)},
            "meta": {k: v for k, v in meta.items() if isinstance(v, int | float | str)},
        }
        self.image_id += 1
        return self._encode(message)

    def finish(self) -> list[bytes]:
        return [self._encode({"type": "end", "series_id": self.series_id})]


def from_config(config: StreamerConfig, rank: int = 0) -> Serializer:
    """The engine of ``SimplonBinarySerializer`` (named in the registry, config/streamer.py):
    the flavor picks the wire form."""
    spec = config.data_serializer
    if not isinstance(spec, cfg.SimplonBinarySerializer):  # the registry maps only this class here
        raise LCLStreamError(f"data_serializer: {spec.type} is not a SimplonBinarySerializer")
    args = (
        config.simplon_image_source(), spec.detector_name, spec.detector_type,
        spec.polarization_fraction, spec.polarization_axis, spec.data_collection_rate,
    )  # fmt: skip
    if spec.flavor == "dectris-stream-v2":
        return SimplonStreamV2Serializer(*args)
    return SimplonBinarySerializer(*args, rank=rank)
