"""End-of-stream records in each format's own shape: ours decode them, upstream's read them."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest

from airflow_provider_lclstream.exceptions import ProtocolError
from airflow_provider_lclstream.protocol import (
    EOS_MAGIC,
    EndOfStream,
    is_end_of_stream,
    is_hdf5,
)
from airflow_provider_lclstream.streamer.pipelines.pipelines import ProcessingPipeline
from airflow_provider_lclstream.streamer.serializers.hdf5 import HDF5BinarySerializer

RECORD = EndOfStream("host:1/r3", rank=3, events=46, batches=10, messages=10, bytes=12345,
                     skipped=1, extra={"filtered": 2, "role": "reader"})  # fmt: skip


def upstream_read(message: bytes) -> int:
    """What upstream's HDF5 pull script does with every message: rows of the first dataset."""
    fh = h5py.File(io.BytesIO(message))
    dataset = fh[list(fh.keys())[0]]
    content = dataset[:].shape[0]
    fh.close()
    return int(content)


def test_default_record_is_an_hdf5_image_with_the_counts() -> None:
    raw = RECORD.encode()
    assert raw.startswith(EOS_MAGIC) and is_end_of_stream(raw) and not is_hdf5(raw)
    assert EndOfStream.decode(raw) == RECORD
    assert upstream_read(raw) == 0
    with h5py.File(io.BytesIO(raw)) as h5:
        assert h5.attrs["lclstream_eos_events"] == 46 and h5.attrs["lclstream_eos_rank"] == 3
        assert h5.attrs["lclstream_eos_producer"] == "host:1/r3"
        assert EndOfStream.decode(EOS_MAGIC + h5.attrs["lclstream_eos"].encode()) == RECORD


def test_a_long_record_grows_the_user_block() -> None:
    big = EndOfStream("p", extra={"note": "x" * 3000})
    raw = big.encode()
    assert EndOfStream.decode(raw) == big and upstream_read(raw) == 0


def test_plain_json_records_still_decode() -> None:
    assert EndOfStream.decode(RECORD.encode_json()) == RECORD


@pytest.mark.parametrize(
    "raw", [EOS_MAGIC + b"{", EOS_MAGIC + b"[1]\x00\x00", EOS_MAGIC + b"\x00{}", EOS_MAGIC]
)
def test_corrupt_records_are_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        EndOfStream.decode(raw)


def test_hdf5_serializer_ends_with_its_own_datasets_empty() -> None:
    serializer = HDF5BinarySerializer({"det": "/data", "t": "/time", "name": "/name"})
    events = [
        {"det": np.ones((2, 4, 6), np.uint16), "t": np.float64(i), "name": np.array("ab")}
        for i in range(3)
    ]
    pipeline = ProcessingPipeline(batch_size=2)
    messages = [
        serializer.serialize(b, {"seq": i}) for i, (b, _) in enumerate(pipeline.batches(events))
    ]
    raw = serializer.encode_end(RECORD)
    assert [upstream_read(bytes(m)) for m in messages] == [2, 1]
    assert upstream_read(raw) == 0 and EndOfStream.decode(raw) == RECORD
    with h5py.File(io.BytesIO(raw)) as h5:
        assert h5["data"].shape == (0, 2, 4, 6) and h5["data"].dtype == np.uint16
        assert h5["time"].shape == (0,) and h5["name"].shape == (0,)


def test_the_buffer_host_line_is_found_after_another_process_s_unfinished_line() -> None:
    from airflow_provider_lclstream.protocol import buffer_host_line, parse_buffer_host

    assert parse_buffer_host("x\n" + buffer_host_line("n1") + "\n") == "n1"
    assert parse_buffer_host("psana: warn" + buffer_host_line("n2") + "\nmore\n") == "n2"
    assert parse_buffer_host("lclstream-buffer: runs on host \n") is None
