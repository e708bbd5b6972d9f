"""The buffer's input endpoints: the blocking receive of its loop's fast path (issue #18)."""

from __future__ import annotations

import time

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
