"""SimplonBinarySerializer: DECTRIS SIMPLON stream-v2-style CBOR messages for CCTBX.

Each message is one header byte (``SIMPLON_HEADER``) then a CBOR map with ``type`` set to
``start``, ``image`` or ``end``. Images are CBOR multi-dimensional arrays (RFC 8746 tag 40 around
a typed array tag), one message per frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.streamer.serializers.base import Serializer

if TYPE_CHECKING:
    from collections.abc import Mapping

SIMPLON_HEADER = b"\x53"  # "S"
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


class SimplonBinarySerializer(Serializer):
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
        self.header = {
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
        return [self._encode({"type": "start", "series_id": self.series_id, **self.header})]

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
