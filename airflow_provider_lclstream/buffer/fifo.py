"""A FIFO bounded by bytes and by messages."""

from __future__ import annotations

from collections import deque
from typing import Any


def payload_size(payload: Any) -> int:
    """Bytes in a ``bytes`` object or a ``zmq.Frame`` (both support ``len``)."""
    return len(payload)


class BoundedFifo:
    """First in, first out; ``has_room()`` says whether one more message fits.

    The byte cap is checked against the largest message seen so far, so with steady message
    sizes the held bytes never exceed ``capacity_bytes``. A single message larger than the cap is
    still accepted into an empty FIFO (otherwise the stream could never move); then the FIFO
    holds exactly that one message.
    """

    def __init__(self, capacity_bytes: int, capacity_messages: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.capacity_messages = capacity_messages
        self.items: deque[Any] = deque()
        self.bytes = 0
        self.largest = 0
        self.peak_bytes = 0
        self.peak_messages = 0

    def __len__(self) -> int:
        return len(self.items)

    def has_room(self) -> bool:
        if not self.items:
            return True
        return (
            len(self.items) < self.capacity_messages
            and self.bytes + self.largest <= self.capacity_bytes
        )

    def put(self, payload: Any) -> None:
        size = payload_size(payload)
        self.items.append(payload)
        self.bytes += size
        self.largest = max(self.largest, size)
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        self.peak_messages = max(self.peak_messages, len(self.items))

    def peek(self) -> Any:
        return self.items[0]

    def pop(self) -> Any:
        payload = self.items.popleft()
        self.bytes -= payload_size(payload)
        return payload

    def clear(self) -> tuple[int, int]:
        """Drop everything; return the (messages, bytes) dropped."""
        dropped = (len(self.items), self.bytes)
        self.items.clear()
        self.bytes = 0
        return dropped
