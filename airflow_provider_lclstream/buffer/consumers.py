"""Consumers connected to the output, and an estimate of what each was handed.

PUSH sockets (NNG and ZeroMQ alike) do not say which peer took a message, so per-consumer counts
are estimates: each message handed to the socket adds ``1/n`` to each of the ``n`` consumers
connected at that moment (fair round-robin). Totals (``messages_out``) are exact. The shares are
handed out lazily, whenever the table is read or the connected set changes, so that a message
costs one addition, not one per consumer.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

KEEP_GONE = 100  # disconnected consumers kept for the stats


@dataclass
class Consumer:
    key: str
    address: str = ""
    connected_at: float = field(default_factory=time.time)
    disconnected_at: float | None = None
    sent_estimate: float = 0.0
    lost: bool = False  # hung up before the stream's end-of-stream fan-out

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "address": self.address,
            "connected_at": self.connected_at,
            "disconnected_at": self.disconnected_at,
            "sent_estimate": round(self.sent_estimate, 1),
            "lost_mid_stream": self.lost,
        }


class ConsumerTable:
    def __init__(self) -> None:
        self.live: dict[str, Consumer] = {}
        self.gone: deque[Consumer] = deque(maxlen=KEEP_GONE)
        self.lost = 0
        self.last_disconnect = 0.0  # time.monotonic() of the latest hang-up
        self.unshared = 0  # messages sent since the live consumers' estimates were last updated

    def _share(self) -> None:
        if self.unshared and self.live:
            share = self.unshared / len(self.live)
            for record in self.live.values():
                record.sent_estimate += share
        self.unshared = 0

    def connect(self, key: str, address: str) -> None:
        self._share()
        self.live[key] = Consumer(key, address)

    def disconnect(self, key: str, mid_stream: bool) -> Consumer | None:
        self._share()
        record = self.live.pop(key, None)
        self.last_disconnect = time.monotonic()
        if record is None:
            return None
        record.disconnected_at = time.time()
        record.lost = mid_stream
        self.lost += int(mid_stream)
        self.gone.append(record)
        return record

    def connected(self) -> list[Consumer]:
        self._share()
        return list(self.live.values())

    def account_send(self, messages: int = 1) -> None:
        self.unshared += messages

    def snapshot(self) -> dict[str, Any]:
        self._share()
        return {
            "connected": len(self.live),
            "lost": self.lost,
            "live": [c.as_dict() for c in self.live.values()],
            "gone": [c.as_dict() for c in self.gone],
        }
