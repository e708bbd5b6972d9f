"""NNG Push0/Pull0 (pynng).

Receivers set ``recv_max_size`` to the caller's maximum (0: no limit): NNG's own 1 MB default
would silently drop larger messages. NNG has
no LINGER, so a sender waits ``linger_s`` (bounded, short) for its pipes to drain before closing.
"""

from __future__ import annotations

import time

import pynng

from airflow_provider_lclstream.exceptions import TransportError
from airflow_provider_lclstream.transports.base import Payload, Receiver, Sender

NNG_CLOSE_GRACE_S = 0.5
SEND_SLICE_S = 0.2
"""A blocked send waits in slices this long: between them Python runs its signal handlers (a
streamer rank's SIGTERM summary), which a send blocked in NNG's C code would hold off."""


def nng_address(url: str, bind: bool) -> str:
    """NNG spells the wildcard host as empty or ``0.0.0.0``; accept ZeroMQ's ``*`` too."""
    if bind and url.startswith("tcp://*:"):
        return "tcp://0.0.0.0:" + url[len("tcp://*:") :]
    return url


class NngSender(Sender):
    library = "nng"

    def __init__(
        self,
        url: str,
        bind: bool,
        queue_messages: int,
        send_timeout_s: float | None,
        linger_s: float,
    ) -> None:
        self.url = url
        self.send_timeout_s = send_timeout_s
        self.linger_s = min(linger_s, NNG_CLOSE_GRACE_S)
        self.socket = pynng.Push0()
        self.socket.send_timeout = int(SEND_SLICE_S * 1000)
        if queue_messages > 0:
            self.socket.send_buffer_size = queue_messages
        try:
            if bind:
                self.socket.listen(nng_address(url, bind))
            else:
                self.socket.dial(url, block=False)
        except pynng.NNGException as err:
            self.socket.close()
            raise TransportError(
                f"nng: cannot {'listen on' if bind else 'dial'} {url}: {err}"
            ) from err
        self.sent_any = False

    def send(self, message: Payload) -> None:
        if not isinstance(message, bytes):
            message = bytes(message)  # pynng takes bytes only
        started = time.monotonic()
        while True:
            try:
                self.socket.send(message)
                break
            except pynng.Timeout as err:  # a slice passed: the message was not queued
                waited = time.monotonic() - started
                if self.send_timeout_s is not None and waited >= self.send_timeout_s:
                    raise TransportError(
                        f"nng: no receiver took data on {self.url} within {self.send_timeout_s} s"
                    ) from err
        self.sent_any = True

    def close(self) -> None:
        if self.sent_any:
            time.sleep(self.linger_s)
        self.socket.close()


class NngReceiver(Receiver):
    library = "nng"

    def __init__(
        self, url: str, bind: bool, queue_messages: int, max_message_bytes: int = 0
    ) -> None:
        self.url = url
        self.socket = pynng.Pull0(recv_max_size=max(0, max_message_bytes))
        if queue_messages > 0:
            self.socket.recv_buffer_size = queue_messages
        try:
            if bind:
                self.socket.listen(nng_address(url, bind))
            else:
                self.socket.dial(url, block=False)
        except pynng.NNGException as err:
            self.socket.close()
            raise TransportError(
                f"nng: cannot {'listen on' if bind else 'dial'} {url}: {err}"
            ) from err

    def recv(self, timeout_s: float | None = None) -> bytes | None:
        self.socket.recv_timeout = -1 if timeout_s is None else max(1, int(timeout_s * 1000))
        try:
            return self.socket.recv()
        except pynng.Timeout:
            return None

    def close(self) -> None:
        self.socket.close()
