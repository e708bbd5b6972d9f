"""A fast path for uncompressed HDF5 messages: build the file layout once, then fill it.

Batches of one run share shapes and dtypes, so the HDF5 file image differs between messages only
in the dataset bytes and in integer attributes (the sequence number). The template is an image
with contiguous, early-allocated datasets; each message copies the header bytes and writes each
array at its dataset's file offset: one pass over the data instead of HDF5's several.

Integer attributes are written with a unique sentinel value and found in the image once. The
template verifies itself (patch, then read back with h5py) and is refused if anything differs,
in which case the caller uses the ordinary h5py path.
"""

from __future__ import annotations

import io
import itertools
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import h5py
import numpy as np

from airflow_provider_lclstream.streamer.pipelines.pipelines import PendingBatch

if TYPE_CHECKING:
    from collections.abc import Mapping

_names = itertools.count()
SENTINEL_BASE = 0x5A3C_0000_0000_0000


POOL_SIZE = 4


@dataclass(frozen=True)
class Hdf5Template:
    image: bytes
    datasets: tuple[tuple[str, int, int], ...]  # (data name, file offset, nbytes)
    layouts: dict[str, tuple[tuple[int, ...], np.dtype]]  # data name -> (shape, dtype)
    int_attrs: tuple[tuple[str, int], ...]  # (meta key, file offset of its int64)
    header_ranges: tuple[tuple[int, int], ...]  # image byte ranges outside the datasets
    pool: list[np.ndarray] = field(default_factory=list, compare=False, repr=False)

    def buffer(self) -> np.ndarray:
        """An output buffer nobody else holds any more, else a new one.

        A sender that does not copy (ZeroMQ with large messages) keeps a reference to the
        message until it is on the wire; a buffer only the pool refers to is free to reuse.
        Reuse spares the page faults of a fresh allocation for every message.
        """
        for array in self.pool:
            if sys.getrefcount(array) <= 3:  # the pool's list, the loop variable, the call
                return array
        array = np.empty(len(self.image), dtype=np.uint8)  # not zero-filled: all overwritten
        if len(self.pool) < POOL_SIZE:
            self.pool.append(array)
        return array

    def fill(self, batch: Mapping[str, np.ndarray], meta: dict[str, object]) -> memoryview:
        """The message for ``batch``: events not yet stacked are stacked in place."""
        buffer = self.buffer()
        view = buffer.data
        for start, stop in self.header_ranges:
            view[start:stop] = self.image[start:stop]
        for name, offset, nbytes in self.datasets:
            if isinstance(batch, PendingBatch) and name not in batch.stacked:
                shape, dtype = self.layouts[name]
                rows = buffer[offset : offset + nbytes].view(dtype).reshape(shape)
                for i, part in enumerate(batch.parts(name)):
                    rows[i] = part
                continue
            array = np.ascontiguousarray(batch[name])
            view[offset : offset + nbytes] = array.data.cast("B")
        for key, offset in self.int_attrs:
            view[offset : offset + 8] = np.int64(cast("int", meta[key])).tobytes()
        return view


def layout(batch: Mapping[str, np.ndarray], name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``batch[name]`` (without stacking events not yet stacked)."""
    if isinstance(batch, PendingBatch) and name not in batch.stacked:
        return batch.layout(name)
    array = np.asarray(batch[name])
    return array.shape, array.dtype


def template_key(
    fields: dict[str, str], batch: Mapping[str, np.ndarray], meta: dict[str, object]
) -> tuple:
    arrays = tuple(
        (name, path, *layout(batch, name)) for name, path in fields.items() if name in batch
    )
    attrs = tuple(
        (k, None if isinstance(v, int) and not isinstance(v, bool) else v)
        for k, v in sorted(meta.items())
    )
    return arrays, attrs


def build_template(
    fields: dict[str, str], batch: Mapping[str, np.ndarray], meta: dict[str, object]
) -> Hdf5Template | None:
    """The template for batches shaped like ``batch``; None when the layout can't be used."""
    layouts = {name: layout(batch, name) for name in fields if name in batch}
    if any(dtype.kind not in "biuf" or not shape for shape, dtype in layouts.values()):
        return None
    sentinels = {}
    offsets: list[tuple[str, int, int]] = []
    with h5py.File(f"template-{next(_names)}.h5", "w", driver="core", backing_store=False) as h5:
        for i, (key, value) in enumerate(sorted(meta.items())):
            if isinstance(value, int) and not isinstance(value, bool):
                sentinels[key] = SENTINEL_BASE + i
                h5.attrs[f"lclstream_{key}"] = np.int64(sentinels[key])
            else:
                h5.attrs[f"lclstream_{key}"] = value  # type: ignore[assignment]
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.CONTIGUOUS)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        created = []
        for name, path in fields.items():
            if name in batch:
                shape, dtype = layouts[name]
                created.append((name, h5.create_dataset(path, shape, dtype, dcpl=dcpl)))
        h5.flush()
        for name, dataset in created:
            offset = dataset.id.get_offset()
            if offset is None:
                return None
            shape, dtype = layouts[name]
            offsets.append((name, int(offset), int(np.prod(shape)) * dtype.itemsize))
        image = bytes(h5.id.get_file_image())
    ranges = []
    cursor = 0
    for _, offset, nbytes in sorted(offsets, key=lambda item: item[1]):
        if offset > cursor:
            ranges.append((cursor, offset))
        cursor = max(cursor, offset + nbytes)
    if cursor < len(image):
        ranges.append((cursor, len(image)))
    int_attrs = []
    for key, sentinel in sentinels.items():
        needle = np.int64(sentinel).tobytes()
        # Attributes live in the header: search only there, not in the (large) data areas.
        found = [start + i for start, stop in ranges for i in _find_all(image[start:stop], needle)]
        if len(found) != 1:
            return None
        int_attrs.append((key, found[0]))
    template = Hdf5Template(image, tuple(offsets), layouts, tuple(int_attrs), tuple(ranges))
    return template if verify(template, fields, batch, meta) else None


def _find_all(haystack: bytes, needle: bytes) -> list[int]:
    found, position = [], haystack.find(needle)
    while position >= 0:
        found.append(position)
        position = haystack.find(needle, position + 1)
    return found


def verify(
    template: Hdf5Template,
    fields: dict[str, str],
    batch: Mapping[str, np.ndarray],
    meta: dict[str, object],
) -> bool:
    """Fill the template with ``batch`` and check h5py reads back exactly what went in."""
    try:
        blob = bytes(template.fill(batch, meta))
        with h5py.File(io.BytesIO(blob), "r") as h5:
            for name, path in fields.items():
                if name in batch and not np.array_equal(h5[path][()], batch[name]):
                    return False
            for key, value in meta.items():
                if h5.attrs[f"lclstream_{key}"] != value:
                    return False
    except Exception:
        return False
    return True
