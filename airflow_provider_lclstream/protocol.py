"""The wire protocol: data messages and the end-of-stream record.

Data messages are the serializer's bytes, unchanged (for HDF5 an HDF5 file image that upstream
receivers open with ``h5py.File(io.BytesIO(blob))``). Each producer rank ends its stream with one
end-of-stream record: the magic prefix ``EOS_MAGIC`` followed by UTF-8 JSON of its counts. The
prefix starts with a NUL byte, so it can never be mistaken for an HDF5 file image (which starts
with ``\\x89HDF``) or a Simplon/CBOR message. The prefix and JSON sit in the user block of an HDF5
file image whose datasets have 0 rows (``EndOfStream.encode``), so an upstream consumer that opens
every message with h5py and reads its first dataset reads the record as empty data and goes on.

A Simplon stream (upstream LCLStreamer's form) carries the same record in Simplon's own shape, so
that upstream's Simplon consumers read it as one more message: ``c`` then a CBOR map whose first
key is ``lclstream_eos`` (the record's fields), then ``type: "stop"``, ``run`` and ``timestamp``
(``SIMPLON_EOS_PREFIX`` identifies it).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, TextIO

import numpy as np

from airflow_provider_lclstream.exceptions import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Mapping

EOS_MAGIC = b"\x00LCLSTREAM-EOS\x00"
SIMPLON_EOS_KEY = "lclstream_eos"
SIMPLON_EOS_PREFIX = b"c\xa4" + bytes([0x60 + len(SIMPLON_EOS_KEY)]) + SIMPLON_EOS_KEY.encode()
"""``c``, a CBOR map of 4 entries, and its first key: the start of a Simplon-shaped record."""
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
PROTOCOL_VERSION = 1
EXIT_ENDED_BY_IDLE = 3
"""Exit status of a receiver or buffer whose stream was ended by ``--end-after-idle``: what came
was fine, but some producer sent no end-of-stream record, so completeness is unknown."""


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

    def encode_json(self) -> builtins.bytes:
        """``EOS_MAGIC`` + JSON: the record alone (what every shape starts with but Simplon's)."""
        return EOS_MAGIC + json.dumps(asdict(self), sort_keys=True).encode()

    def encode(
        self, datasets: Mapping[str, tuple[tuple[int, ...], str]] | None = None
    ) -> builtins.bytes:
        """The record as an HDF5 file image that upstream HDF5 consumers read as empty data.

        ``EOS_MAGIC`` + JSON fill the file's user block (a power of two, at least 512 bytes,
        zero-padded); the HDF5 superblock follows it, where HDF5 looks for it. ``datasets``
        (path -> (shape after the first axis, dtype)) are created with 0 rows, so a consumer
        that reads the first top-level dataset of every message counts 0 events; by default one
        float64 dataset ``data``. The root attributes hold the counts (``lclstream_eos_*``).
        """
        import io

        import h5py

        head = self.encode_json()
        userblock = 512
        while userblock <= len(head):
            userblock *= 2
        out = io.BytesIO()
        with h5py.File(out, "w", userblock_size=userblock) as h5:
            for path, (shape, dtype) in (datasets or {"data": ((), "float64")}).items():
                kind = np.dtype(dtype)
                stored = h5py.string_dtype() if kind.kind in "OUS" else kind
                h5.create_dataset(path, shape=(0, *shape), dtype=stored)
            for name, value in asdict(self).items():
                if name != "extra":
                    h5.attrs[f"lclstream_eos_{name}"] = value
            h5.attrs["lclstream_eos"] = head[len(EOS_MAGIC) :].decode()
        image = bytearray(out.getvalue())
        image[: len(head)] = head
        return builtins.bytes(image)

    def encode_simplon(self, run: str = "", timestamp: float | None = None) -> builtins.bytes:
        """The record as a Simplon ``c`` stop message (see the module docstring)."""
        import cbor2

        message = {
            SIMPLON_EOS_KEY: asdict(self),
            "type": "stop",
            "run": run,
            "timestamp": time.time() if timestamp is None else timestamp,
        }
        return b"c" + cbor2.dumps(message)

    @classmethod
    def decode(cls, message: builtins.bytes | memoryview) -> EndOfStream:
        raw = builtins.bytes(message)
        if raw.startswith(SIMPLON_EOS_PREFIX):
            payload = _simplon_payload(raw)
        elif not raw.startswith(EOS_MAGIC):
            raise ProtocolError("not an end-of-stream record (missing magic prefix)")
        else:
            body = raw[len(EOS_MAGIC) :]
            end = body.find(b"\x00")  # JSON never holds a raw NUL: the user block's padding
            try:
                payload = json.loads(body if end < 0 else body[:end])
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


def _simplon_payload(raw: bytes) -> object:
    import cbor2

    try:
        decoded = cbor2.loads(raw[1:])
    except Exception as err:  # cbor2 raises several kinds on malformed input
        raise ProtocolError(f"corrupt end-of-stream record: {err}") from err
    if not isinstance(decoded, dict):
        raise ProtocolError("corrupt end-of-stream record: not a CBOR map")
    return decoded.get(SIMPLON_EOS_KEY)


def is_end_of_stream(message: bytes | memoryview) -> bool:
    head = bytes(message[: max(len(EOS_MAGIC), len(SIMPLON_EOS_PREFIX))])
    return head.startswith(EOS_MAGIC) or head.startswith(SIMPLON_EOS_PREFIX)


def is_hdf5(message: bytes | memoryview) -> bool:
    return bytes(message[: len(HDF5_SIGNATURE)]) == HDF5_SIGNATURE


def producer_name(rank: int) -> str:
    """A name that identifies one producer rank across hosts: ``host:pid/rRANK``."""
    return f"{socket.gethostname()}:{os.getpid()}/r{rank}"


def emit_line(line: str, stream: TextIO | None = None) -> None:
    """One line in one write to ``stream`` (stdout by default). ``print`` writes the text and
    the newline apart, and the ranks share mpiexec's stdout and stderr (one job log), so another
    rank's line could land between them, and a line parsed from the log (the standby's address,
    a rank's summary) would start mid-line."""
    out = sys.stdout if stream is None else stream
    out.flush()
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # a captured or replaced stream
        out.write(line + "\n")
        out.flush()
        return
    data = (line + "\n").encode()
    while data:  # a pipe takes up to PIPE_BUF (4096) bytes at once, unsplit
        data = data[os.write(fd, data) :]


BUFFER_HOST_PREFIX = "lclstream-buffer: runs on host "
"""The line ``lclstream-buffer`` prints on stdout once its sockets are bound: where it runs, for
job backends that do not say on which node a job landed (psik)."""


def buffer_host_line(host: str | None = None) -> str:
    return BUFFER_HOST_PREFIX + (host or socket.gethostname())


def parse_buffer_host(text: str) -> str | None:
    """The host of the last ``buffer_host_line`` in a job's log, or None (the line may start
    mid-line, after another process's unfinished one)."""
    found = None
    for line in text.splitlines():
        at = line.rfind(BUFFER_HOST_PREFIX)
        if at >= 0:
            host = line[at + len(BUFFER_HOST_PREFIX) :].strip()
            found = host or found
    return found


# --------------------------------------------------------------------------- callback signatures

SIGNATURE_HEADER = "x-hub-signature-256"
"""The header of a signed lifecycle callback (GitHub/psik webhook style)."""


def sign_body(body: bytes | str, secret: str) -> str:
    """The ``x-hub-signature-256`` value for ``body``: ``sha256=<hex HMAC-SHA256>`` of the exact
    body bytes, keyed with ``secret``; what psik and the buffer's callbacks send."""
    data = body.encode() if isinstance(body, str) else body
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def verify_signature(body: bytes | str, secret: str, header: str | None) -> bool:
    """True if ``header`` is ``body``'s signature (constant-time compare; None: False)."""
    if not header:
        return False
    return hmac.compare_digest(sign_body(body, secret), header.strip())
