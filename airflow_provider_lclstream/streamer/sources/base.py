"""The event-source interface and the data sources any event source can serve."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_provider_lclstream.config.streamer import DATA_SOURCES
from airflow_provider_lclstream.config.streamer_components import ComponentModel
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.streamer.components import engine_for, has_engine
from airflow_provider_lclstream.streamer.sources.synthetic import SyntheticFrames

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from pydantic import BaseModel

    from airflow_provider_lclstream.config.streamer_components import (
        ConstValue,
        GenericRandomNumpyArray,
        SourceIdentifier,
        SyntheticDetector,
    )

# An event: data-source name -> value; None marks a value the source could not provide.
RawEvent = dict[str, np.ndarray | None]


@dataclass(frozen=True)
class Partition:
    """This process's share of the work: MPI rank and size."""

    rank: int = 0
    size: int = 1

    def owns(self, index: int) -> bool:
        return index % self.size == self.rank


class EventSource(ABC):
    """Yields events as ``(event_id, {name: ndarray | None})`` for this rank only.

    ``role`` is this rank's part in reading (psana2's parallel mode has smd0, eb, bd ranks);
    ``metadata`` goes into every message's attributes (e.g. ``calibration: skip``).
    """

    role: str = "reader"
    #: True when the ranks read together (psana2's parallel mode): a failed rank ends them all.
    coupled: bool = False
    #: Set by ``events()`` when the stream ended cleanly but the data did not (a live run that
    #: stopped growing): the engine sends the end records with the counts, then fails with it.
    end_error: Exception | None = None

    @property
    def metadata(self) -> dict[str, str]:
        return {}

    @abstractmethod
    def events(self, max_events: int | None) -> Iterator[tuple[str, RawEvent]]:
        """This rank's events, at most ``max_events`` of them (None: all)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections."""


def generic_value(name: str, config: BaseModel, source_identifier: str, seed: int) -> Any:
    """A callable ``index -> ndarray`` for the data sources that need no facility data, or None.

    Which data sources have such a reader is the component registry's ``engines`` (each is one
    of the functions below); the others are read by the event source they are named after.
    """
    if not isinstance(config, ComponentModel) or not has_engine(DATA_SOURCES, config):
        return None
    return engine_for(DATA_SOURCES, config)(config, source_identifier, seed)


def random_array(config: GenericRandomNumpyArray, source_identifier: str, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(config.array_dtype)

    def make() -> np.ndarray:
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max, size=config.array_shape, dtype=dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, size=config.array_shape).astype(bool)
        return rng.random(size=config.array_shape).astype(dtype)

    fixed = make()
    return lambda index: make() if config.always_random else fixed


def const_value(config: ConstValue, source_identifier: str, seed: int) -> Any:
    const = np.asarray(config.value, dtype=config.dtype)
    return lambda index: const


def source_identifier(config: SourceIdentifier, source_identifier: str, seed: int) -> Any:
    ident = np.asarray(source_identifier)
    return lambda index: ident


def synthetic_frames(config: SyntheticDetector, source_identifier: str, seed: int) -> Any:
    frames = SyntheticFrames(
        config.frame_shape,
        config.dtype,
        config.seed,
        config.pedestal,
        config.noise,
        config.peaks_per_frame,
    )
    return frames.frame


def constant(value: Any) -> Callable[[Any], Any]:
    """A reader that ignores the event and returns ``value``."""
    return lambda _event: value


def first_of(generic: Callable[[int], Any]) -> Callable[[Any], Any]:
    """A reader for facility event sources from an index-based generic one (always index 0)."""
    return lambda _event: generic(0)


def unsupported(source: str, name: str, config: BaseModel) -> LCLStreamError:
    kind = getattr(config, "type", type(config).__name__)
    return LCLStreamError(
        f"data_sources.{name}: {kind} cannot be read by {source} "
        f"(it needs the event source it is named after)"
    )
