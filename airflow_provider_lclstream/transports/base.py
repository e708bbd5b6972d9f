"""The transport interface and the factory that picks NNG or ZeroMQ by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

from airflow_provider_lclstream.exceptions import TransportError

Library = Literal["zmq", "nng"]
LIBRARIES: tuple[str, ...] = ("zmq", "nng")
Payload = bytes | bytearray | memoryview
"""What a sender takes: any contiguous bytes-like object (sent without a copy where possible)."""

DEFAULT_SEND_TIMEOUT_S = 60.0
DEFAULT_LINGER_S = 60.0
DEFAULT_MAX_MESSAGE_MB = 1024.0
"""Largest message a receiving socket takes, in MB (10**6 bytes); 0 means no limit.

The transport refuses a larger message before buffering it: ZeroMQ (``MAXMSGSIZE``) and NNG
(``recv_max_size``) drop the connection that carries it, so it and whatever that connection had
queued behind it never arrive, and show as missing in the end-of-stream accounting.
"""


def max_message_bytes(mb: float) -> int:
    """``--max-message-mb`` as bytes (0: no limit); a negative value is refused."""
    if mb < 0:
        raise TransportError(f"bad maximum message size {mb!r} MB: must be >= 0 (0: no limit)")
    return int(mb * 10**6)


class Sender(ABC):
    """A PUSH socket: ``send`` blocks while no receiver can take data (back-pressure)."""

    url: str
    library: str

    @abstractmethod
    def send(self, message: Payload) -> None:
        """Send one message; raise TransportError when no peer took it within the send timeout."""

    @abstractmethod
    def close(self) -> None:
        """Flush what is queued (up to the linger time), then close: nothing is dropped silently."""

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Receiver(ABC):
    """A PULL socket."""

    url: str
    library: str

    @abstractmethod
    def recv(self, timeout_s: float | None = None) -> bytes | None:
        """Return the next message, or None when nothing arrived within ``timeout_s``."""

    @abstractmethod
    def close(self) -> None:
        """Close the socket."""

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_library(library: str) -> str:
    if library not in LIBRARIES:
        raise TransportError(f"unknown transport library {library!r}; choose one of {LIBRARIES}")
    return library


def check_url(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise TransportError(
            f"bad URL {url!r}: expected scheme://address, e.g. tcp://127.0.0.1:5000"
        )
    return url


def open_sender(
    url: str,
    library: str = "zmq",
    *,
    bind: bool = False,
    queue_messages: int = 0,
    send_timeout_s: float | None = DEFAULT_SEND_TIMEOUT_S,
    linger_s: float = DEFAULT_LINGER_S,
    socket_buffer_bytes: int = 0,
) -> Sender:
    """Open a pushing socket that dials ``url`` (client) or listens on it (``bind=True``, server).

    ``queue_messages`` bounds the messages queued in the socket (0: the library default).
    ``socket_buffer_bytes`` sets the OS send buffer of ZeroMQ's TCP sockets (0: the OS
    default; capped by the OS maximum); NNG has no such option and ignores it.
    """
    check_url(url)
    if check_library(library) == "zmq":
        from airflow_provider_lclstream.transports.zmq_transport import ZmqSender

        return ZmqSender(url, bind, queue_messages, send_timeout_s, linger_s, socket_buffer_bytes)
    from airflow_provider_lclstream.transports.nng_transport import NngSender

    return NngSender(url, bind, queue_messages, send_timeout_s, linger_s)


def open_receiver(
    url: str,
    library: str = "zmq",
    *,
    bind: bool = True,
    queue_messages: int = 0,
    max_message_bytes: int = 0,
) -> Receiver:
    """Open a pulling socket that listens on ``url`` (``bind=True``) or dials it.

    ``max_message_bytes`` > 0 makes the transport refuse larger messages (see
    :data:`DEFAULT_MAX_MESSAGE_MB`); 0 takes any size.
    """
    check_url(url)
    if check_library(library) == "zmq":
        from airflow_provider_lclstream.transports.zmq_transport import ZmqReceiver

        return ZmqReceiver(url, bind, queue_messages, max_message_bytes)
    from airflow_provider_lclstream.transports.nng_transport import NngReceiver

    return NngReceiver(url, bind, queue_messages, max_message_bytes)
