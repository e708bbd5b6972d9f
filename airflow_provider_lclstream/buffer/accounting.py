"""End-of-stream accounting: which producers were seen, which ended, which vanished.

Data messages do not name their producer, so a producer is first known by the input connection
(NNG pipe, ZeroMQ connection) its messages arrive on, and by name once its ``EndOfStream``
arrives on that connection. A connection that delivered data and closed without an EOS is a
producer that vanished. An upstream buffer is one producer: its EOS counts as one ending.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_lclstream.protocol import EndOfStream

VANISH_GRACE_S = 1.0  # messages still queued after a disconnect are read within this time


@dataclass
class Connection:
    """One input connection and what arrived on it during this stream."""

    key: str
    address: str = ""
    connected_at: float = field(default_factory=time.time)
    disconnected_at: float | None = None
    messages: int = 0
    bytes: int = 0
    ended_by: list[str] = field(default_factory=list)  # producer names whose EOS came here

    def describe(self) -> str:
        where = f" from {self.address}" if self.address else ""
        return f"{self.key}{where} ({self.messages} messages, {self.bytes} bytes, no end-of-stream)"


class StreamAccounting:
    """Counts for one stream; ``seen_eos`` survives resets so late duplicates are ignored."""

    def __init__(self, expect_producers: int | None) -> None:
        self.expect = expect_producers
        self.seen_eos: set[tuple[str, str]] = set()
        self.reset()

    def reset(self) -> None:
        """Start the next stream; connections still open carry over with zero counts."""
        old: dict[str, Connection] = getattr(self, "connections", {})
        self.connections: dict[str, Connection] = {
            k: Connection(k, c.address, c.connected_at)
            for k, c in old.items()
            if c.disconnected_at is None
        }
        self.ended: dict[str, EndOfStream] = {}
        self.duplicate_eos = 0
        self.messages_in = 0
        self.bytes_in = 0

    # events -----------------------------------------------------------------------------
    def connect(self, key: str, address: str) -> None:
        conn = self._conn(key)  # may exist already: its data can arrive before the event
        conn.address = address or conn.address

    def disconnect(self, key: str) -> None:
        conn = self.connections.get(key)
        if conn is not None and conn.disconnected_at is None:
            conn.disconnected_at = time.time()

    def _conn(self, key: str) -> Connection:
        if key not in self.connections:
            self.connections[key] = Connection(key)
        return self.connections[key]

    def data(self, key: str, nbytes: int, messages: int = 1) -> None:
        """``messages`` data messages of ``nbytes`` bytes in all came on connection ``key``."""
        conn = self._conn(key)
        conn.messages += messages
        conn.bytes += nbytes
        self.messages_in += messages
        self.bytes_in += nbytes

    def end(self, key: str, eos: EndOfStream) -> bool:
        """Record an EOS; False for a duplicate (same producer and upstream stream id)."""
        ident = (eos.producer, str(eos.extra.get("stream_id", "")))
        if ident in self.seen_eos or eos.producer in self.ended:
            self.duplicate_eos += 1
            return False
        self.seen_eos.add(ident)
        self.ended[eos.producer] = eos
        self._conn(key).ended_by.append(eos.producer)
        return True

    # queries ----------------------------------------------------------------------------
    def unended(self) -> list[Connection]:
        """Connections that delivered data but no EOS.

        ZeroMQ names a connection by its file descriptor, which the OS reuses: a producer that
        connects right after another one closed can have its messages or its EOS counted on the
        old connection. When every expected producer ended and their records account for every
        message received, no connection is missing an EOS, whatever the attribution says.
        """
        loose = [c for c in self.connections.values() if c.messages and not c.ended_by]
        if loose and self.expect is not None and len(self.ended) >= self.expect:
            declared = sum(int(e.messages) for e in self.ended.values())
            received = sum(c.messages for c in self.connections.values())
            if declared == received:
                return []
        return loose

    def vanished(self, now: float | None = None) -> list[Connection]:
        """Unended connections that closed more than a grace period ago."""
        now = time.time() if now is None else now
        return [
            c
            for c in self.unended()
            if c.disconnected_at is not None and now - c.disconnected_at > VANISH_GRACE_S
        ]

    @property
    def producers_seen(self) -> int:
        return len(self.ended) + len(self.unended())

    @property
    def started(self) -> bool:
        return self.messages_in > 0 or bool(self.ended)

    def complete(self) -> bool:
        """All expected producers ended (without --expect-producers: every one seen ended)."""
        if self.expect is not None:
            return len(self.ended) >= self.expect
        return bool(self.ended) and not self.unended()

    def missing_ranks(self) -> list[int]:
        """Ranks 0..expect-1 with no EOS, when the ended producers' ranks fit that range."""
        if self.expect is None:
            return []
        ranks = {eos.rank for eos in self.ended.values()}
        if not ranks <= set(range(self.expect)):
            return []
        return sorted(set(range(self.expect)) - ranks)

    def problems(self) -> list[str]:
        """Human-readable reasons the stream is incomplete (empty when complete)."""
        out = [f"producer vanished without end-of-stream: {c.describe()}" for c in self.unended()]
        if self.expect is not None and len(self.ended) < self.expect:
            ranks = self.missing_ranks()
            which = f"; missing ranks {ranks}" if ranks else ""
            out.append(f"{len(self.ended)} of {self.expect} expected producers ended{which}")
        return out

    def totals(self) -> dict[str, int]:
        """Sums of the producers' own EOS counts."""
        keys = ("events", "batches", "messages", "bytes", "skipped")
        return {k: sum(int(getattr(e, k)) for e in self.ended.values()) for k in keys}

    def snapshot(self) -> dict[str, Any]:
        return {
            "expected": self.expect,
            "seen": self.producers_seen,
            "ended": len(self.ended),
            "names": sorted(self.ended),
            "connected": sum(1 for c in self.connections.values() if c.disconnected_at is None),
            "vanished": [c.describe() for c in self.vanished()],
            "missing_ranks": self.missing_ranks(),
            "duplicate_eos": self.duplicate_eos,
            "per_producer": {
                name: {
                    "rank": e.rank,
                    "messages": e.messages,
                    "bytes": e.bytes,
                    "events": e.events,
                    "batches": e.batches,
                    "skipped": e.skipped,
                }
                for name, e in self.ended.items()
            },
        }
