"""Per-message records: one JSON line per data message a consumer received.

``lclstream-receive --out DIR`` writes ``DIR/<prefix>_messages.jsonl`` next to the message files:
when each message arrived (wall clock, taken as the receive returned), which producer rank sent
it, its sequence number, size and events. Throughput per second and per rank, time to first data
and gaps can be computed from it after the fact (``make demo`` plots it).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_lclstream.consumer.receiver import Message

RECORDS_SUFFIX = "_messages.jsonl"


class MessageRecord(BaseModel):
    """One received data message. ``producer``/``rank``/``seq`` are None for messages that
    carry no ``lclstream_*`` attributes (non-HDF5, or from another streamer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    file: str | None
    received_at: float
    producer: str | None
    rank: int | None
    seq: int | None
    bytes: int
    events: int

    @classmethod
    def of(cls, message: Message, file: str | None = None) -> MessageRecord:
        attrs = message.attrs
        producer, rank, seq = (
            attrs.get("lclstream_producer"),
            attrs.get("lclstream_rank"),
            attrs.get("lclstream_seq"),
        )
        return cls(
            index=message.index,
            file=file,
            received_at=message.received_at,
            producer=producer if isinstance(producer, str) else None,
            rank=int(rank) if isinstance(rank, int) else None,
            seq=int(seq) if isinstance(seq, int) else None,
            bytes=len(message.raw),
            events=message.events,
        )


def records_path(out: Path, prefix: str) -> Path:
    """Where ``lclstream-receive --out OUT --prefix PREFIX`` writes its records."""
    return out / f"{prefix}{RECORDS_SUFFIX}"


def read_records(path: Path) -> list[MessageRecord]:
    """Every complete line of a records file (a line still being written is left out)."""
    records = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith("\n"):
                break
            try:
                records.append(MessageRecord.model_validate(json.loads(line)))
            except ValueError as err:
                raise ValueError(f"{path}:{number}: not a message record: {err}") from err
    return records
