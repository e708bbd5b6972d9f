"""Hdf5EventSource: replay events from HDF5 files (ours, or any file with a per-event axis 0).

Each data source name reads the dataset ``datasets[name]`` (default: a dataset of that name at
any depth). Rank r replays events r, r+size, ... of the concatenated files.
"""

from __future__ import annotations

import glob
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.streamer.sources.base import (
    EventSource,
    Partition,
    RawEvent,
    generic_value,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_lclstream.config import streamer_components as cfg
    from airflow_provider_lclstream.config.streamer import StreamerConfig


def expand_files(patterns: list[str]) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern))
        if not matched:
            raise LCLStreamError(f"event_source.files: no file matches {pattern!r}")
        files.extend(matched)
    return files


def find_dataset(h5: Any, name: str) -> str | None:
    """The path of the first dataset called ``name`` (or ending in ``/name``)."""
    import h5py

    found: list[str] = []

    def visit(path: str, item: object) -> None:
        if not found and isinstance(item, h5py.Dataset) and path.split("/")[-1] == name:
            found.append(path)

    h5.visititems(visit)
    return found[0] if found else None


class Hdf5EventSource(EventSource):
    def __init__(self, config: StreamerConfig, partition: Partition) -> None:
        self.config = config
        self.partition = partition
        spec = cast("cfg.Hdf5EventSource", config.event_source)  # the registry's choice
        self.files = expand_files(list(spec.files))
        self.datasets: dict[str, str] = dict(spec.datasets)

    def events(self, max_events: int | None) -> Iterator[tuple[str, RawEvent]]:
        import h5py

        index = 0
        produced = 0
        for path in self.files:
            with h5py.File(path, "r") as h5:
                readers: dict[str, Any] = {}
                length: int | None = None
                for name, source in self.config.data_sources.items():
                    generic = generic_value(name, source, self.config.source_identifier, 0)
                    if generic is not None:
                        readers[name] = lambda i, g=generic: g(i)
                        continue
                    dataset_path = self.datasets.get(name) or find_dataset(h5, name)
                    if dataset_path is None or dataset_path not in h5:
                        raise LCLStreamError(
                            f"data_sources.{name}: no dataset {dataset_path or name!r} in {path}"
                        )
                    dataset = h5[dataset_path]
                    if dataset.ndim == 0:
                        raise LCLStreamError(f"{path}:{dataset_path} has no per-event axis 0")
                    length = dataset.shape[0] if length is None else min(length, dataset.shape[0])
                    readers[name] = lambda i, d=dataset: d[i]
                for local in range(length or 0):
                    if self.partition.owns(index):
                        if max_events is not None and produced >= max_events:
                            return
                        produced += 1
                        yield f"{path}:{local}", {n: r(local) for n, r in readers.items()}
                    index += 1
