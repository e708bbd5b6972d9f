"""Real pynng/pyzmq sockets on loopback: both libraries, both roles, large messages, timeouts."""

from __future__ import annotations

import socket
import threading

import pytest

from airflow_provider_lclstream.exceptions import TransportError
from airflow_provider_lclstream.protocol import EndOfStream, is_end_of_stream
from airflow_provider_lclstream.transports import open_receiver, open_sender


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("library", ["zmq", "nng"])
@pytest.mark.parametrize("receiver_binds", [True, False])
def test_round_trip_large_messages_and_eos(library: str, receiver_binds: bool) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    big = bytes(range(256)) * (3 * 4096)  # 3 MiB: above NNG's 1 MB default receive limit
    receiver = open_receiver(url, library, bind=receiver_binds)
    sender = open_sender(url, library, bind=not receiver_binds, send_timeout_s=10)
    got: list[bytes] = []

    def pull() -> None:
        while True:
            message = receiver.recv(timeout_s=10)
            assert message is not None
            got.append(message)
            if is_end_of_stream(message):
                return

    thread = threading.Thread(target=pull)
    thread.start()
    for _ in range(5):
        sender.send(big)
    sender.send(EndOfStream(producer="t", messages=5).encode())
    sender.close()
    thread.join(20)
    receiver.close()
    assert [len(m) for m in got[:-1]] == [len(big)] * 5
    assert got[0] == big
    assert EndOfStream.decode(got[-1]).messages == 5


@pytest.mark.parametrize("library", ["zmq", "nng"])
def test_send_to_unreachable_url_times_out(library: str) -> None:
    sender = open_sender(f"tcp://127.0.0.1:{free_port()}", library, send_timeout_s=0.5, linger_s=0)
    with pytest.raises(TransportError, match="no receiver took data"):
        sender.send(b"x")
    sender.close()


def test_a_blocked_nng_send_lets_signal_handlers_run() -> None:
    """A streamer rank blocked sending to a gone buffer still takes its SIGTERM at once: the
    send waits in short slices, not in NNG's C code for the whole send timeout."""
    import signal
    import time

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    sender = open_sender(f"tcp://127.0.0.1:{free_port()}", "nng", send_timeout_s=10, linger_s=0)
    previous = signal.signal(signal.SIGALRM, handler)
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupted):
            sender.send(b"x")
        assert time.monotonic() - started < 3.0  # not the 10 s send timeout
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sender.close()


def signal_from_another_thread(delay_s: float) -> threading.Thread:
    """SIGUSR1 for the process, taken by a helper thread after ``delay_s``: Python runs the
    handler on the main thread only once that thread is back in Python code (a cancel's SIGTERM
    reaches a streamer rank on any of its threads: a handler's, MPI's)."""
    import signal
    import time

    def kill() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        time.sleep(delay_s)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("library", ["zmq", "nng"])
@pytest.mark.parametrize("case", ["no-peer-small", "no-peer-large", "peer-not-reading"])
def test_a_blocked_send_takes_a_signal_that_another_thread_received(
    library: str, case: str
) -> None:
    """A rank blocked sending (no peer; or a peer that reads nothing, so ZeroMQ waits for its
    large messages in flight) runs its signal handler within a slice, not at the 30 s send
    timeout."""
    import signal
    import time

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    url = f"tcp://127.0.0.1:{free_port()}"
    receiver = open_receiver(url, library, queue_messages=1) if case == "peer-not-reading" else None
    sender = open_sender(url, library, send_timeout_s=30, linger_s=0)
    message = b"x" if case == "no-peer-small" else bytearray(16 * 1024 * 1024)
    previous = signal.signal(signal.SIGUSR1, handler)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # this thread never takes it
    try:
        signal_from_another_thread(0.5)
        started = time.monotonic()
        with pytest.raises(Interrupted):
            for _ in range(40):  # a peer that reads nothing holds a few messages at most
                sender.send(message)
        assert time.monotonic() - started < 3.0  # not the 30 s send timeout
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        signal.signal(signal.SIGUSR1, previous)
        sender.close()
        if receiver is not None:
            receiver.close()


def test_bad_library_and_url_are_clear() -> None:
    with pytest.raises(TransportError, match="choose one of"):
        open_sender("tcp://127.0.0.1:1", "carrier-pigeon")
    with pytest.raises(TransportError, match="bad URL"):
        open_receiver("127.0.0.1:5000")


def test_zmq_sender_bounds_large_messages_in_flight() -> None:
    """ZeroMQ queues 1000 messages by default; large ones must not pile up in the sender.

    The receiver reads nothing and queues at most one message, so after a couple of 16 MB
    messages the sender has nowhere to put the next and its send times out.
    """
    from airflow_provider_lclstream.transports.zmq_transport import ZERO_COPY_IN_FLIGHT

    url = f"tcp://127.0.0.1:{free_port()}"
    receiver = open_receiver(url, "zmq", queue_messages=1)
    sender = open_sender(url, "zmq", send_timeout_s=1.0, linger_s=0)
    big = bytearray(16 * 1024 * 1024)
    sent = 0
    try:
        with pytest.raises(TransportError, match="no receiver took data"):
            for _ in range(20):
                sender.send(big)
                sent += 1
    finally:
        sender.close()
        receiver.close()
    # receiver queue + kernel buffers + the sender's bound: far fewer than zmq's 1000
    assert ZERO_COPY_IN_FLIGHT <= sent < 10


def test_zmq_socket_buffer_is_applied() -> None:
    import zmq

    sender = open_sender(
        f"tcp://127.0.0.1:{free_port()}", "zmq", linger_s=0, socket_buffer_bytes=1 << 20
    )
    try:
        assert sender.socket.getsockopt(zmq.SNDBUF) == 1 << 20  # type: ignore[attr-defined]
    finally:
        sender.close()
