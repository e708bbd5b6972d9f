"""Per-message records: what a consumer writes for each message, and reading them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from airflow_provider_lclstream.consumer.receiver import parse_message
from airflow_provider_lclstream.consumer.records import MessageRecord, read_records, records_path
from airflow_provider_lclstream.streamer.serializers.hdf5 import HDF5BinarySerializer


def message_bytes(rank: int, seq: int, events: int) -> bytes:
    serializer = HDF5BinarySerializer({"detector_data": "/data/data"})
    batch = {"detector_data": np.arange(events * 16, dtype=np.uint16).reshape(events, 4, 4)}
    return bytes(
        serializer.serialize(batch, {"producer": f"h:1/r{rank}", "rank": rank, "seq": seq})
    )


def test_a_record_names_rank_sequence_size_and_events(tmp_path: Path) -> None:
    raw = message_bytes(rank=1, seq=7, events=3)
    message = parse_message(5, raw)
    message.received_at = 1234.5
    record = MessageRecord.of(message, "c0_000005.h5")
    assert record == MessageRecord(
        index=5,
        file="c0_000005.h5",
        received_at=1234.5,
        producer="h:1/r1",
        rank=1,
        seq=7,
        bytes=len(raw),
        events=3,
    )
    foreign = MessageRecord.of(parse_message(0, b"not hdf5"))  # e.g. a Simplon message
    assert (foreign.producer, foreign.rank, foreign.seq, foreign.events) == (None, None, None, 1)


def test_reading_skips_a_line_still_being_written_and_names_a_bad_one(tmp_path: Path) -> None:
    path = records_path(tmp_path, "c0")
    assert path.name == "c0_messages.jsonl"
    first = MessageRecord.of(parse_message(0, message_bytes(0, 0, 2)), "a.h5")
    partial = MessageRecord.of(parse_message(1, message_bytes(0, 1, 2)), "b.h5").model_dump_json()
    path.write_text(first.model_dump_json() + "\n" + partial[:20])
    assert read_records(path) == [first]
    path.write_text(first.model_dump_json() + '\n{"index": 1}\n')
    with pytest.raises(ValueError, match=r"c0_messages.jsonl:2: not a message record"):
        read_records(path)
