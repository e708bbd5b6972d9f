"""The serializer interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from airflow_provider_lclstream.transports.base import Payload


class Serializer(ABC):
    """Turn batches into messages; ``start``/``finish`` may add messages around the data."""

    def start(self) -> list[bytes]:
        return []

    @abstractmethod
    def serialize(self, batch: Mapping[str, np.ndarray], meta: dict[str, object]) -> Payload:
        """One message for one batch; ``meta`` holds scalar attributes (producer, sequence...)."""

    def finish(self) -> list[bytes]:
        return []
