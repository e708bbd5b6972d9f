"""The buffer's own end-of-stream record follows the shape of the stream it carries."""

from __future__ import annotations

import cbor2

from airflow_provider_lclstream.buffer.core import _looks_simplon, _simplon_run
from airflow_provider_lclstream.protocol import HDF5_SIGNATURE, EndOfStream


def test_simplon_messages_are_recognised_and_hdf5_is_not() -> None:
    assert _looks_simplon(b"c" + cbor2.dumps({"type": "start"}))
    assert _looks_simplon(b"m" + cbor2.dumps({"type": "image", "data": b"x"}))
    assert not _looks_simplon(HDF5_SIGNATURE + b"\x00" * 8)
    assert not _looks_simplon(b"c")  # too short to be a map
    assert not _looks_simplon(b"cat and dog")  # 'a' is not a CBOR map's first byte


def test_the_run_of_a_simplon_stop_is_kept() -> None:
    record = EndOfStream(producer="p", messages=3).encode_simplon(run="266")
    assert _simplon_run(record) == "266"
    assert _simplon_run(b"c\xff\xff") == ""  # undecodable: no run, no crash
