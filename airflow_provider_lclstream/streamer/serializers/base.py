"""The serializer interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from airflow_provider_lclstream.protocol import EndOfStream
    from airflow_provider_lclstream.transports.base import Payload


class Serializer(ABC):
    """Turn batches into messages.

    ``start`` and ``header`` messages go on every link of a streaming handler before the first
    data message (``header`` sees the first batch); ``finish`` messages follow the last batch;
    ``encode_end`` writes this producer's end-of-stream record in the format's own shape. With
    ``end_after_all_ranks`` the engine waits until every rank has sent its last message before
    any rank sends its end-of-stream record. ``batch_axis``: batches must have the batch axis
    even from a pipeline that does not stack (NoOp).
    """

    end_after_all_ranks = False
    batch_axis = False

    def start(self) -> list[bytes]:
        return []

    def header(self, batch: Mapping[str, np.ndarray]) -> list[bytes]:
        return []

    @abstractmethod
    def serialize(self, batch: Mapping[str, np.ndarray], meta: dict[str, object]) -> Payload:
        """One message for one batch; ``meta`` holds scalar attributes (producer, sequence...)."""

    def messages(self, batch: Mapping[str, np.ndarray], meta: dict[str, object]) -> list[Payload]:
        """The messages for one batch (one, unless the format sends one per event)."""
        return [self.serialize(batch, meta)]

    def finish(self) -> list[bytes]:
        return []

    def encode_end(self, record: EndOfStream) -> bytes:
        return record.encode()
