"""HDF5 and Simplon serializers: round trips through what a consumer does with the bytes."""

from __future__ import annotations

import io

import cbor2
import h5py
import numpy as np
import pytest

from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.protocol import is_hdf5
from airflow_provider_lclstream.streamer.serializers.hdf5 import (
    COMPRESSIONS,
    HDF5BinarySerializer,
    read_hdf5_header,
)
from airflow_provider_lclstream.streamer.serializers.simplon import (
    SIMPLON_HEADER,
    SimplonStreamV2Serializer,
    decode_cbor_array,
)

FRAMES = np.random.default_rng(1).integers(0, 3000, size=(3, 2, 64, 64), dtype=np.uint16)


@pytest.mark.parametrize("compression", [None, *COMPRESSIONS])
def test_hdf5_image_opens_with_h5py_and_keeps_data(compression: str | None) -> None:
    batch = {"det": FRAMES, "energy": np.array([9.5, 9.6, 9.7]), "skip": np.zeros(3)}
    blob = HDF5BinarySerializer(
        {"det": "/data/data", "energy": "/beam/energy"}, compression, 3
    ).serialize(batch, {"producer": "p", "rank": 1, "seq": 7})
    assert is_hdf5(blob)
    with h5py.File(io.BytesIO(blob), "r") as h5:  # exactly what an upstream consumer does
        np.testing.assert_array_equal(h5["/data/data"][()], FRAMES)
        np.testing.assert_allclose(h5["/beam/energy"][()], [9.5, 9.6, 9.7])
        assert "skip" not in h5
        assert h5.attrs["lclstream_seq"] == 7
    attrs, shapes = read_hdf5_header(blob)
    assert attrs["lclstream_producer"] == "p"
    assert shapes["/data/data"] == FRAMES.shape


def test_compression_makes_detector_frames_smaller() -> None:
    frames = np.full((4, 256, 256), 100, dtype=np.uint16)
    plain = HDF5BinarySerializer({"d": "/d"}).serialize({"d": frames}, {})
    packed = HDF5BinarySerializer({"d": "/d"}, "bitshuffle_with_lz4").serialize({"d": frames}, {})
    assert len(packed) < len(plain) / 10


def test_unknown_compression_is_refused() -> None:
    with pytest.raises(LCLStreamError, match="choose one of"):
        HDF5BinarySerializer({"d": "/d"}, "lzma")


def test_strings_are_stored() -> None:
    blob = HDF5BinarySerializer({"info": "/info"}).serialize({"info": np.array(["exp", "12"])}, {})
    with h5py.File(io.BytesIO(blob)) as h5:
        assert [v.decode() for v in h5["/info"][()]] == ["exp", "12"]


def test_simplon_start_image_end() -> None:
    serializer = SimplonStreamV2Serializer("detector_data", detector_name="jungfrau")
    start = serializer.start()[0]
    image = serializer.serialize({"detector_data": FRAMES[0]}, {"seq": 0})
    end = serializer.finish()[0]
    for message in (start, image, end):
        assert message[:1] == SIMPLON_HEADER
    assert cbor2.loads(start[1:])["type"] == "start"
    decoded = cbor2.loads(image[1:])
    assert decoded["type"] == "image" and decoded["image_id"] == 0
    np.testing.assert_array_equal(decode_cbor_array(decoded["data"]["threshold_1"]), FRAMES[0])
    assert cbor2.loads(end[1:])["type"] == "end"


def test_simplon_missing_source_is_clear() -> None:
    with pytest.raises(LCLStreamError, match="not in the event"):
        SimplonStreamV2Serializer("detector_data").serialize({"other": FRAMES}, {})


def test_uncompressed_fast_path_matches_h5py_path_for_every_message() -> None:
    serializer = HDF5BinarySerializer({"det": "/data/data", "t": "/t"})
    rng = np.random.default_rng(5)
    for seq in range(3):
        batch = {
            "det": rng.integers(0, 9, (2, 3, 8, 8), dtype=np.uint16),
            "t": np.arange(2.0) + seq,
        }
        meta = {"producer": "host:1/r0", "rank": 0, "seq": seq}
        fast = bytes(serializer.serialize(batch, meta))
        slow = serializer.serialize_with_h5py(batch, meta)
        for blob in (fast, slow):
            with h5py.File(io.BytesIO(blob)) as h5:
                np.testing.assert_array_equal(h5["/data/data"][()], batch["det"])
                np.testing.assert_array_equal(h5["/t"][()], batch["t"])
                assert h5.attrs["lclstream_seq"] == seq
                assert h5.attrs["lclstream_producer"] == "host:1/r0"
    assert len(serializer._templates) == 1  # built once, reused for every message


def test_output_buffers_are_reused_only_when_nobody_holds_them() -> None:
    serializer = HDF5BinarySerializer({"d": "/d"})
    batch = {"d": np.zeros((2, 64, 64), dtype=np.uint16)}
    first = serializer.serialize(batch, {"seq": 0})
    held = bytes(first)
    second = serializer.serialize({"d": np.ones((2, 64, 64), dtype=np.uint16)}, {"seq": 1})
    assert bytes(first) == held  # still held by us: not overwritten
    first_buffer = id(first.obj)
    del first
    third = serializer.serialize(batch, {"seq": 2})
    assert id(third.obj) == first_buffer  # released: reused
    assert bytes(second) != bytes(third)


def test_zero_copy_zmq_messages_arrive_intact() -> None:
    """Reused buffers and ZeroMQ's zero-copy send: every message arrives as it was made."""
    import socket
    import threading

    from airflow_provider_lclstream.transports import open_receiver, open_sender

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    serializer = HDF5BinarySerializer({"d": "/d"})
    got: list[bytes] = []
    receiver = open_receiver(url, "zmq")

    def pull() -> None:
        for _ in range(30):
            message = receiver.recv(20)
            assert message is not None
            got.append(message)

    thread = threading.Thread(target=pull)
    thread.start()
    with open_sender(url, "zmq", send_timeout_s=20) as sender:
        for seq in range(30):
            frames = np.full((4, 128, 128), seq, dtype=np.uint16)
            sender.send(serializer.serialize({"d": frames}, {"seq": seq}))
    thread.join(30)
    receiver.close()
    for seq, blob in enumerate(got):
        with h5py.File(io.BytesIO(blob)) as h5:
            assert h5.attrs["lclstream_seq"] == seq
            assert (h5["/d"][()] == seq).all()


def test_pending_batch_is_stacked_straight_into_the_message() -> None:
    """A batch of unstacked events gives the same message as the stacked batch, stacked once."""
    from airflow_provider_lclstream.streamer.pipelines.pipelines import PendingBatch

    serializer = HDF5BinarySerializer({"det": "/data/data", "t": "/t"})
    rng = np.random.default_rng(7)
    for seq in range(3):
        events = [
            {"det": rng.integers(0, 9, (3, 8, 8), dtype=np.uint16), "t": np.float64(i + seq)}
            for i in range(4)
        ]
        pending = PendingBatch(events)
        blob = bytes(serializer.serialize(pending, {"producer": "p", "rank": 0, "seq": seq}))
        if seq > 0:  # the first message builds and verifies the template (which stacks)
            assert pending.stacked == {}
        with h5py.File(io.BytesIO(blob)) as h5:
            np.testing.assert_array_equal(
                h5["/data/data"][()], np.stack([e["det"] for e in events])
            )
            np.testing.assert_array_equal(h5["/t"][()], [i + seq for i in range(4)])
            assert h5.attrs["lclstream_seq"] == seq
    assert len(serializer._templates) == 1
