"""ZeroMQ PUSH/PULL (pyzmq)."""

from __future__ import annotations

import time
from collections import deque

import zmq

from airflow_provider_lclstream.exceptions import TransportError
from airflow_provider_lclstream.transports.base import Payload, Receiver, Sender


def zmq_address(url: str, bind: bool) -> str:
    """ZeroMQ spells the wildcard host ``*``; accept ``0.0.0.0`` and an empty host too."""
    if bind and url.startswith("tcp://"):
        host, _, port = url[len("tcp://") :].rpartition(":")
        if host in ("", "0.0.0.0"):
            return f"tcp://*:{port}"
    return url


ZERO_COPY_MIN_BYTES = 65536
"""Messages at least this large are sent from the caller's buffer instead of being copied."""
ZERO_COPY_IN_FLIGHT = 2
"""Large messages queued in the socket at once: the next send waits until one is on the wire.

ZeroMQ's own queue counts messages (1000 by default), not bytes: with 40 MB messages a producer
would run ahead by gigabytes and allocate a new buffer for every message, which costs more than
the wait. Small messages are copied and keep the library's queue.
"""
SEND_SLICE_S = 0.2
"""A blocked send waits in slices this long: between them Python runs its signal handlers (a
streamer rank's SIGTERM summary). A send blocked in libzmq's C code, or a tracker's wait, holds
them off while the signal went to another thread (a handler's, MPI's)."""


class ZmqSender(Sender):
    library = "zmq"

    def __init__(
        self,
        url: str,
        bind: bool,
        queue_messages: int,
        send_timeout_s: float | None,
        linger_s: float,
        socket_buffer_bytes: int = 0,
    ) -> None:
        self.url = url
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUSH)
        if socket_buffer_bytes > 0:
            self.socket.setsockopt(zmq.SNDBUF, socket_buffer_bytes)
        # IMMEDIATE: queue only on connected peers, so an unreachable receiver times out
        # instead of filling an invisible queue.
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.LINGER, int(linger_s * 1000))
        if queue_messages > 0:
            self.socket.setsockopt(zmq.SNDHWM, queue_messages)
        self.send_timeout_s = send_timeout_s
        self.in_flight: deque[zmq.MessageTracker] = deque()
        self.socket.setsockopt(zmq.SNDTIMEO, int(SEND_SLICE_S * 1000))
        try:
            if bind:
                self.socket.bind(zmq_address(url, bind))
            else:
                self.socket.connect(url)
        except zmq.ZMQError as err:
            self.close()
            raise TransportError(
                f"zmq: cannot {'bind' if bind else 'connect'} {url}: {err}"
            ) from err

    def send(self, message: Payload) -> None:
        started = time.monotonic()
        if len(message) < ZERO_COPY_MIN_BYTES:
            self._send_in_slices(message, started, copy=True)
            return
        while len(self.in_flight) >= ZERO_COPY_IN_FLIGHT:
            try:
                self.in_flight[0].wait(SEND_SLICE_S)
            except zmq.NotDone:  # a slice passed: the message is still queued
                self._check_waited(started)
                continue
            self.in_flight.popleft()
        tracker = self._send_in_slices(message, started, copy=False)
        assert tracker is not None
        self.in_flight.append(tracker)

    def _send_in_slices(
        self, message: Payload, started: float, copy: bool
    ) -> zmq.MessageTracker | None:
        while True:
            try:
                if copy:
                    self.socket.send(message)
                    return None
                return self.socket.send(message, copy=False, track=True)
            except zmq.Again:  # a slice passed: the message was not queued
                self._check_waited(started)

    def _check_waited(self, started: float) -> None:
        if self.send_timeout_s is not None and time.monotonic() - started >= self.send_timeout_s:
            raise TransportError(
                f"zmq: no receiver took data on {self.url} within {self.send_timeout_s} s"
            )

    def close(self) -> None:
        if not self.socket.closed:
            self.socket.close()  # honours LINGER: queued messages are flushed first
        self.context.term()


class ZmqReceiver(Receiver):
    library = "zmq"

    def __init__(
        self, url: str, bind: bool, queue_messages: int, max_message_bytes: int = 0
    ) -> None:
        self.url = url
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        if max_message_bytes > 0:  # a larger message drops its connection, unbuffered
            self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        if queue_messages > 0:
            self.socket.setsockopt(zmq.RCVHWM, queue_messages)
        try:
            if bind:
                self.socket.bind(zmq_address(url, bind))
            else:
                self.socket.connect(url)
        except zmq.ZMQError as err:
            self.close()
            raise TransportError(
                f"zmq: cannot {'bind' if bind else 'connect'} {url}: {err}"
            ) from err

    def recv(self, timeout_s: float | None = None) -> bytes | None:
        timeout_ms = None if timeout_s is None else int(timeout_s * 1000)
        if not self.socket.poll(timeout_ms, zmq.POLLIN):
            return None
        return self.socket.recv()

    def close(self) -> None:
        if not self.socket.closed:
            self.socket.close()
        self.context.term()
