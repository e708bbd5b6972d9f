"""The wire protocol: data messages and the end-of-stream record.

Data messages are the serializer's bytes, unchanged (for HDF5 an HDF5 file image that upstream
receivers open with ``h5py.File(io.BytesIO(blob))``). Each producer rank ends its stream with one
end-of-stream record: the magic prefix ``EOS_MAGIC`` followed by UTF-8 JSON of its counts. The
prefix starts with a NUL byte, so it can never be mistaken for an HDF5 file image (which starts
with ``\\x89HDF``) or a Simplon/CBOR message; an upstream receiver that fails to open it as HDF5
can skip it.
"""

from __future__ import annotations

import builtins
import json
import os
import socket
from dataclasses import asdict, dataclass, field

from airflow_provider_lclstream.exceptions import ProtocolError

EOS_MAGIC = b"\x00LCLSTREAM-EOS\x00"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
PROTOCOL_VERSION = 1


@dataclass
class EndOfStream:
    """A producer's final counts; the receiver checks them against what it got."""

    producer: str
    rank: int = 0
    events: int = 0
    batches: int = 0
    messages: int = 0
    bytes: int = 0
    skipped: int = 0
    version: int = PROTOCOL_VERSION
    extra: dict[str, object] = field(default_factory=dict)

    def encode(self) -> builtins.bytes:
        return EOS_MAGIC + json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, message: builtins.bytes | memoryview) -> EndOfStream:
        raw = builtins.bytes(message)
        if not raw.startswith(EOS_MAGIC):
            raise ProtocolError("not an end-of-stream record (missing magic prefix)")
        try:
            payload = json.loads(raw[len(EOS_MAGIC) :])
        except ValueError as err:
            raise ProtocolError(f"corrupt end-of-stream record: {err}") from err
        if not isinstance(payload, dict):
            raise ProtocolError("corrupt end-of-stream record: not a JSON object")
        problems = [
            f"{name} is {type(payload[name]).__name__}, expected {kind.__name__}"
            for name, kind in _FIELD_TYPES.items()
            if name in payload
            and (not isinstance(payload[name], kind) or isinstance(payload[name], bool))
        ]
        if "producer" not in payload:
            problems.append("producer is missing")
        if problems:
            raise ProtocolError(f"corrupt end-of-stream record: {'; '.join(problems)}")
        return cls(**{k: payload[k] for k in cls.__dataclass_fields__ if k in payload})


_FIELD_TYPES: dict[str, type] = {
    "producer": str,
    "rank": int,
    "events": int,
    "batches": int,
    "messages": int,
    "bytes": int,
    "skipped": int,
    "version": int,
    "extra": dict,
}
"""What each field of a record must be: a record that breaks this is corrupt, never counted."""


def is_end_of_stream(message: bytes | memoryview) -> bool:
    return bytes(message[: len(EOS_MAGIC)]) == EOS_MAGIC


def is_hdf5(message: bytes | memoryview) -> bool:
    return bytes(message[: len(HDF5_SIGNATURE)]) == HDF5_SIGNATURE


def producer_name(rank: int) -> str:
    """A name that identifies one producer rank across hosts: ``host:pid/rRANK``."""
    return f"{socket.gethostname()}:{os.getpid()}/r{rank}"
