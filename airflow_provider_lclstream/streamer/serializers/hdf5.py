"""HDF5BinarySerializer: an HDF5 file image in memory, one per batch.

A consumer opens a message with ``h5py.File(io.BytesIO(blob))``. Root attributes named
``lclstream_*`` carry the producer, its rank and the message's sequence number, which let a
receiver count per producer and find gaps; upstream receivers ignore them.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from airflow_provider_lclstream.config import streamer_components as cfg
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.streamer.pipelines.pipelines import PendingBatch
from airflow_provider_lclstream.streamer.serializers.base import Serializer
from airflow_provider_lclstream.streamer.serializers.hdf5_template import (
    Hdf5Template,
    build_template,
    template_key,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_lclstream.config.streamer import StreamerConfig
    from airflow_provider_lclstream.protocol import EndOfStream
    from airflow_provider_lclstream.transports.base import Payload

log = logging.getLogger(__name__)

COMPRESSIONS = (
    "gzip",
    "gzip_with_shuffle",
    "bitshuffle_with_lz4",
    "bitshuffle_with_zstd",
    "zfp",
)
ZFP_DTYPES = {np.dtype(t) for t in ("int32", "int64", "float32", "float64")}
_image_names = itertools.count()


def filter_options(compression: str | None, level: int, dtype: np.dtype) -> dict[str, Any]:
    """h5py ``create_dataset`` keywords for one compression name (hdf5plugin filters)."""
    if compression in (None, "none", "None"):
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level or 4}
    if compression == "gzip_with_shuffle":
        return {"compression": "gzip", "compression_opts": level or 4, "shuffle": True}
    import hdf5plugin

    if compression == "bitshuffle_with_lz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if compression == "bitshuffle_with_zstd":
        return dict(hdf5plugin.Bitshuffle(cname="zstd", clevel=level or 3))
    if compression == "zfp":
        if dtype not in ZFP_DTYPES:
            return {}  # zfp only encodes 32/64-bit numbers; the caller warns once
        return dict(hdf5plugin.Zfp(reversible=True))
    raise LCLStreamError(f"unknown compression {compression!r}; choose one of {COMPRESSIONS}")


class HDF5BinarySerializer(Serializer):
    """Write ``fields`` (data name -> HDF5 path) of each batch into an in-memory HDF5 file."""

    def __init__(
        self,
        fields: dict[str, str],
        compression: str | None = None,
        compression_level: int = 0,
    ) -> None:
        if compression not in (None, "none", "None", *COMPRESSIONS):
            raise LCLStreamError(
                f"unknown compression {compression!r}; choose one of {COMPRESSIONS} or none"
            )
        self.fields = dict(fields)
        self.compression = compression
        self.compression_level = compression_level
        self._warned: set[str] = set()
        self._templates: dict[tuple, Hdf5Template | None] = {}
        self.end_layout: dict[str, tuple[tuple[int, ...], str]] | None = None
        """The first message's datasets (path -> shape after axis 0, dtype), for the end record."""

    def _remember_layout(self, batch: Mapping[str, np.ndarray]) -> None:
        layout: dict[str, tuple[tuple[int, ...], str]] = {}
        for name, path in self.fields.items():
            if name not in batch:
                continue
            if isinstance(batch, PendingBatch):
                shape, dtype = batch.layout(name)
            else:
                value = np.asarray(batch[name])
                shape, dtype = value.shape, value.dtype
            layout[path] = (tuple(shape[1:]), np.dtype(dtype).str)
        self.end_layout = layout

    def encode_end(self, record: EndOfStream) -> bytes:
        """The end record as an HDF5 image with the data messages' datasets, 0 rows each."""
        if self.end_layout is None:  # nothing sent: the configured paths, shape unknown
            return record.encode({path: ((), "float64") for path in self.fields.values()})
        return record.encode(self.end_layout)

    def _options(self, name: str, value: np.ndarray) -> dict[str, Any]:
        if value.ndim == 0 or value.nbytes < 1024:
            return {}
        options = filter_options(self.compression, self.compression_level, value.dtype)
        if not options and self.compression == "zfp" and name not in self._warned:
            self._warned.add(name)
            log.warning("zfp cannot encode %s (%s): stored uncompressed", name, value.dtype)
        if options:
            frame = value.shape[1:] if value.ndim >= 3 else value.shape
            options["chunks"] = (1, *frame) if value.ndim >= 3 else frame
        return options

    def serialize(self, batch: Mapping[str, np.ndarray], meta: dict[str, object]) -> Payload:
        if self.end_layout is None:
            self._remember_layout(batch)
        if self.compression in (None, "none", "None"):
            key = template_key(self.fields, batch, meta)
            if key not in self._templates:
                if len(self._templates) > 16:
                    self._templates.clear()  # shapes keep changing: don't hoard templates
                self._templates[key] = build_template(self.fields, batch, meta)
            template = self._templates[key]
            if template is not None:
                return template.fill(batch, meta)
        return self.serialize_with_h5py(batch, meta)

    def serialize_with_h5py(
        self, batch: Mapping[str, np.ndarray], meta: dict[str, object]
    ) -> bytes:
        """The general path: any dtype, any compression."""
        name = f"lclstream-{next(_image_names)}.h5"
        total = sum(np.asarray(v).nbytes for v in batch.values())
        block = max(64 * 1024, total + 256 * 1024)  # one allocation for the whole image
        with h5py.File(name, "w", driver="core", backing_store=False, block_size=block) as h5:
            for key, value in meta.items():
                h5.attrs[f"lclstream_{key}"] = value  # type: ignore[assignment]
            for data_name, path in self.fields.items():
                if data_name not in batch:
                    continue
                value = np.asarray(batch[data_name])
                if value.dtype.kind in "OU":
                    h5.create_dataset(path, data=value.astype(h5py.string_dtype()))
                else:
                    h5.create_dataset(path, data=value, **self._options(data_name, value))
            h5.flush()
            image = h5.id.get_file_image()
            return image if isinstance(image, bytes) else bytes(image)


def parse_hdf5_message(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Open one HDF5 message: every dataset by its path, and the root attributes."""
    import io

    data: dict[str, np.ndarray] = {}
    with h5py.File(io.BytesIO(blob), "r") as h5:
        attrs = {key: _plain(value) for key, value in h5.attrs.items()}

        def visit(path: str, item: object) -> None:
            if isinstance(item, h5py.Dataset):
                data["/" + path] = item[()]

        h5.visititems(visit)
    return data, attrs


def read_hdf5_header(blob: bytes) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """Root attributes and every dataset's shape, without reading the data."""
    import io

    shapes: dict[str, tuple[int, ...]] = {}
    with h5py.File(io.BytesIO(blob), "r") as h5:
        attrs = {key: _plain(value) for key, value in h5.attrs.items()}

        def visit(path: str, item: object) -> None:
            if isinstance(item, h5py.Dataset):
                shapes["/" + path] = tuple(item.shape)

        h5.visititems(visit)
    return attrs, shapes


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def from_config(config: StreamerConfig, rank: int = 0) -> HDF5BinarySerializer:
    """The engine of ``HDF5BinarySerializer`` (named in the registry, config/streamer.py)."""
    spec = config.data_serializer
    if not isinstance(spec, cfg.HDF5BinarySerializer):  # the registry maps only this class here
        raise LCLStreamError(f"data_serializer: {spec.type} is not an HDF5BinarySerializer")
    fields = spec.fields or {name: f"/{name}" for name in config.data_sources}
    return HDF5BinarySerializer(fields, spec.compression, spec.compression_level)
