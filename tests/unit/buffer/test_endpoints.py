"""The buffer's input endpoints: the blocking receive of its loop's fast path (issue #18)."""

from __future__ import annotations

import time
from typing import Any

import pynng
import pytest
import zmq

from airflow_provider_lclstream.buffer.endpoints import open_endpoint


def _free_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("library", ["zmq", "nng"])
def test_recv_wait_waits_its_timeout_then_returns_what_comes(library: str) -> None:
    url = _free_url()
    context = zmq.Context()
    inp = open_endpoint(library, url, "input", dial=False, queue=2, linger_s=0, context=context)
    try:
        started = time.monotonic()
        assert inp.recv_wait(0.2) is None
        waited = time.monotonic() - started
        assert 0.15 <= waited < 2.0  # it blocked in the receive, and not for ever

        if library == "zmq":
            peer = context.socket(zmq.PUSH)
            peer.connect(url)
            peer.send(b"one")
        else:
            peer = pynng.Push0()
            peer.dial(url, block=True)
            peer.send(b"one")
        try:
            got = inp.recv_wait(5.0)
            assert got is not None
            payload, key = got
            raw = payload.bytes if hasattr(payload, "bytes") else bytes(payload)
            assert raw == b"one"
            # the key is the connection's: the one its connect event names
            deadline = time.monotonic() + 5.0
            keys: list[str] = []
            while not keys and time.monotonic() < deadline:
                keys = [e.key for e in inp.take_events() if e.kind == "connect"]
                time.sleep(0.01)
            assert keys == [key]
        finally:
            peer.close()
    finally:
        inp.close()
        context.term()


def test_a_new_connection_on_a_reused_fd_gets_its_own_key() -> None:
    """The OS gives a new connection the fd a closed one had: its frames must not count on
    the old connection, even when nobody read the peer events in between (the buffer reads
    them every 20 ms while data moves)."""
    url = _free_url()
    context = zmq.Context()
    inp = open_endpoint("zmq", url, "input", dial=False, queue=2, linger_s=0, context=context)
    try:
        keys, fds = [], []
        for _ in range(2):
            peer = context.socket(zmq.PUSH)
            peer.setsockopt(zmq.LINGER, 1000)
            peer.connect(url)
            peer.send(b"x")
            got = inp.recv_wait(5.0)
            assert got is not None
            keys.append(got[1])
            fds.append(int(got[0].get(zmq.SRCFD)))
            peer.close()
            time.sleep(0.3)  # the endpoint's side of the connection closes
        assert keys[0] != keys[1], (keys, fds)
    finally:
        inp.close()
        context.term()


@pytest.mark.parametrize("library", ["zmq", "nng"])
def test_has_input_says_whether_a_receive_would_find_a_message(library: str) -> None:
    """The loop asks before each further receive (#18): a wrong "no" would leave data in the
    input, a wrong "yes" costs a failed receive."""
    url = _free_url()
    context = zmq.Context()
    inp = open_endpoint(library, url, "input", dial=False, queue=2, linger_s=0, context=context)
    peer: Any = None
    try:
        assert not inp.has_input()
        if library == "zmq":
            peer = context.socket(zmq.PUSH)
            peer.connect(url)
        else:
            peer = pynng.Push0()
            peer.dial(url, block=True)
        peer.send(b"one")
        deadline = time.monotonic() + 5.0
        while not inp.has_input():
            assert time.monotonic() < deadline, "has_input never saw the message"
            time.sleep(0.01)
        got = inp.recv_nowait()
        assert got is not None
        assert not inp.has_input()
        assert inp.recv_nowait() is None
    finally:
        if peer is not None:
            peer.close()
        inp.close()
        context.term()


def test_zmq_send_wait_times_out_without_a_consumer_then_delivers() -> None:
    """``send_wait`` blocks in ZeroMQ's own send up to its timeout: False (the payload kept) while
    no consumer is connected, True once one is; the timeout may change between calls."""
    url = _free_url()
    context = zmq.Context()
    out = open_endpoint("zmq", url, "output", dial=False, queue=2, linger_s=0, context=context)
    pull = context.socket(zmq.PULL)
    try:
        assert out.waits_in_send
        started = time.monotonic()
        assert out.send_wait(b"payload", 0.2) is False
        assert 0.15 <= time.monotonic() - started < 2.0
        pull.connect(url)
        assert out.send_wait(b"payload", 5.0) is True
        assert pull.poll(5000) and pull.recv() == b"payload"
        frame = zmq.Frame(b"x" * 100_000)  # a received frame goes out without a copy
        assert out.send_wait(frame, 0.05) is True
        assert pull.poll(5000) and pull.recv() == frame.bytes
    finally:
        pull.close(0)
        out.close()
        context.term()


def test_nng_output_keeps_the_poll() -> None:
    """NNG's blocking send cost more CPU per GB than the poll path (A/B, #18)."""
    out = open_endpoint("nng", _free_url(), "output", dial=False, queue=2, linger_s=0)
    try:
        assert not out.waits_in_send
    finally:
        out.close()


def test_an_nng_payload_keeps_enough_of_its_head_to_tell_an_end_of_stream() -> None:
    """The loop reads an NNG message's body once at receipt (``head``): the end-of-stream check
    must find both record shapes in it."""
    from airflow_provider_lclstream.buffer.core import _is_eos
    from airflow_provider_lclstream.buffer.endpoints import NngPayload
    from airflow_provider_lclstream.protocol import EndOfStream

    assert NngPayload.HEAD_BYTES >= 16
    url = _free_url()
    with pynng.Pull0(listen=url) as pull, pynng.Push0(dial=url) as push:
        pull.recv_timeout = 5000
        record = EndOfStream(producer="p", rank=0, messages=1)
        for raw, is_eos in [
            (record.encode(), True),
            (record.encode_simplon(run="r1"), True),
            (b"\x89HDF\r\n\x1a\n" + b"x" * 100, False),
            (b"c" + b"y" * 100, False),
        ]:
            push.send(raw)
            payload = NngPayload(pull.recv_msg())
            assert len(payload) == len(raw) and bytes(payload.head) == raw[:32]
            assert _is_eos(payload) is is_eos
