"""Non-blocking PULL (input) and PUSH (output) endpoints that also report their peers.

The transports' ``Sender``/``Receiver`` block and hide peers, so the buffer works one level
lower: NNG pipe callbacks and the pipe id carried by every received NNG message; ZeroMQ socket
monitors (ACCEPTED/CONNECTED/DISCONNECTED, keyed by file descriptor) and the ``SRCFD`` property
of every received ZeroMQ frame. Both stay wire-compatible with plain PUSH/PULL peers.
"""

from __future__ import annotations

import contextlib
import select
import socket as pysocket
from collections import deque
from dataclasses import dataclass
from typing import Any

import pynng
import zmq
from zmq.utils.monitor import recv_monitor_message

from airflow_provider_lclstream.exceptions import TransportError
from airflow_provider_lclstream.transports.nng_transport import nng_address
from airflow_provider_lclstream.transports.zmq_transport import zmq_address

POLLIN = zmq.POLLIN
POLLOUT = zmq.POLLOUT
_POLLIN = int(zmq.POLLIN)
"""As a plain int: ``EVENTS & POLLIN`` with the enum builds enum objects, once per message."""


@dataclass
class PeerEvent:
    """A peer connected to or disconnected from an endpoint."""

    kind: str  # "connect" | "disconnect"
    key: str
    address: str = ""


class Endpoint:
    """Common part: the socket, its peer events and what to poll."""

    library = ""
    url = ""
    role = ""
    waits_in_send = False
    """Whether the buffer's loop waits in ``send_wait`` while data is queued (else it polls).
    ZeroMQ: yes, the cheaper path (#18). NNG: no, its blocking send cost more CPU per GB than
    its poll path in two A/Bs at 1 MiB (2026-12-02: 1.17 against 1.06 s/GB, and with the loop
    that alternates blocking receive and send 1.03 against 0.94)."""

    def __init__(self) -> None:
        self.events: deque[PeerEvent] = deque()

    def poll_items(self, want_data: bool, want_events: bool = True) -> list[tuple[Any, int]]:
        """(socket or fd, flag) pairs for ``zmq.Poller``; with ``want_events``, what signals a
        peer event too (NNG: nothing, its callbacks queue them)."""
        raise NotImplementedError

    def recv_wait(self, timeout_s: float) -> tuple[Any, str] | None:
        """The next message and its connection key, waiting up to ``timeout_s`` in the
        transport's own blocking receive; None when none came."""
        raise NotImplementedError

    def has_input(self) -> bool:
        """Whether a receive would find a message now (cheaper than a receive that fails)."""
        raise NotImplementedError

    def send_wait(self, payload: Any, timeout_s: float) -> bool:
        """Hand ``payload`` to the output, waiting up to ``timeout_s`` in the transport's own
        blocking send; False when no consumer took it in that time (the payload is kept).
        Only where ``waits_in_send``."""
        raise NotImplementedError

    def take_events(self) -> list[PeerEvent]:
        out = []
        while self.events:
            out.append(self.events.popleft())
        return out

    def close(self) -> None:
        raise NotImplementedError


class NngPayload:
    """A received NNG message kept as pynng's ``Message``, so that the buffer forwards it with
    ``send_msg`` and no copy (what a pynng forwarding loop does).

    ``len()`` and ``head`` (the first ``HEAD_BYTES``, enough to tell an end-of-stream record)
    are read once at receipt, from one view of the body: after ``send_msg`` NNG owns (and frees)
    the memory, so nothing may read the body then, and each view costs about 3 us (#18).
    ``buffer`` is a view of the body (through ``Message._buffer``, the access pynng's own docs
    describe); ``bytes`` copies it.
    """

    __slots__ = ("head", "msg", "size")
    HEAD_BYTES = 32

    def __init__(self, msg: pynng.Message) -> None:
        self.msg = msg
        body = msg._buffer
        self.size = len(body)
        self.head = body[: self.HEAD_BYTES]

    def __len__(self) -> int:
        return self.size

    @property
    def buffer(self) -> memoryview:
        return memoryview(self.msg._buffer)

    @property
    def bytes(self) -> bytes:
        return self.msg.bytes


class NngEndpoint(Endpoint):
    library = "nng"

    def __init__(
        self, url: str, role: str, dial: bool, queue: int, max_message_bytes: int = 0
    ) -> None:
        super().__init__()
        self.url, self.role = url, role
        if role == "input":
            self.socket: pynng.Socket = pynng.Pull0(recv_max_size=max(0, max_message_bytes))
            self.socket.recv_buffer_size = queue
        else:
            self.socket = pynng.Push0()
        self.socket.add_post_pipe_connect_cb(self._on_add)
        self.socket.add_post_pipe_remove_cb(self._on_remove)
        try:
            if dial:
                self.socket.dial(url, block=False)
            else:
                self.socket.listen(nng_address(url, True))
        except pynng.NNGException as err:
            self.socket.close()
            verb = "dial" if dial else "listen on"
            raise TransportError(f"nng: cannot {verb} --{role} {url}: {err}") from err
        self.fd = self.socket.recv_fd if role == "input" else self.socket.send_fd
        self._fd_poll = select.poll()  # NNG's receive fd is readable while a message waits
        self._fd_poll.register(self.fd, select.POLLIN)
        self._recv_timeout_ms = -1

    def _on_add(self, pipe: pynng.Pipe) -> None:
        try:
            address = str(pipe.remote_address)
        except Exception:  # noqa: BLE001 - an exotic transport may lack the option
            address = ""
        self.events.append(PeerEvent("connect", f"nng-pipe-{pipe.id}", address))

    def _on_remove(self, pipe: pynng.Pipe) -> None:
        self.events.append(PeerEvent("disconnect", f"nng-pipe-{pipe.id}"))

    def poll_items(self, want_data: bool, want_events: bool = True) -> list[tuple[Any, int]]:
        return [(self.fd, POLLIN)] if want_data else []

    def has_input(self) -> bool:
        return bool(self._fd_poll.poll(0))

    def recv_nowait(self) -> tuple[NngPayload, str] | None:
        """The next message and the key of the pipe it came on, or None."""
        try:
            msg = self.socket.recv_msg(block=False)
        except (pynng.TryAgain, pynng.Closed):
            return None
        except pynng.NNGException as err:
            raise TransportError(f"nng: receive on {self.url} failed: {err}") from err
        pipe = msg.pipe  # None when the pipe closed before pynng saw the message's pipe
        return NngPayload(msg), f"nng-pipe-{pipe.id if pipe is not None else -1}"

    def recv_wait(self, timeout_s: float) -> tuple[NngPayload, str] | None:
        ms = max(1, round(timeout_s * 1000))
        if ms != self._recv_timeout_ms:
            self.socket.recv_timeout = ms
            self._recv_timeout_ms = ms
        try:
            msg = self.socket.recv_msg(block=True)
        except (pynng.Timeout, pynng.Closed):
            return None
        except pynng.NNGException as err:
            raise TransportError(f"nng: receive on {self.url} failed: {err}") from err
        pipe = msg.pipe
        return NngPayload(msg), f"nng-pipe-{pipe.id if pipe is not None else -1}"

    def send_nowait(self, payload: Any) -> bool:
        try:
            if isinstance(payload, NngPayload):
                self.socket.send_msg(payload.msg, block=False)  # NNG takes the memory over
            else:
                data = payload if isinstance(payload, bytes) else bytes(payload.buffer)
                self.socket.send(data, block=False)
        except pynng.TryAgain:
            return False
        return True

    def close(self) -> None:
        self.socket.close()


def _peer_address(fd: int) -> str:
    """Best-effort ``host:port`` of the TCP peer on a ZeroMQ-owned file descriptor."""
    try:
        with pysocket.socket(fileno=pysocket.dup(fd)) as sock:
            peer = sock.getpeername()
    except OSError:
        return ""
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


class ZmqEndpoint(Endpoint):
    library = "zmq"
    waits_in_send = True

    def __init__(
        self,
        context: zmq.Context,
        url: str,
        role: str,
        dial: bool,
        queue: int,
        linger_s: float,
        max_message_bytes: int = 0,
    ) -> None:
        super().__init__()
        self.url, self.role = url, role
        self.socket: zmq.Socket = context.socket(zmq.PULL if role == "input" else zmq.PUSH)
        if role == "input":
            self.socket.setsockopt(zmq.RCVHWM, queue)
            self.socket.setsockopt(zmq.LINGER, 0)
            if max_message_bytes > 0:  # a larger message drops its connection, unbuffered
                self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        else:
            self.socket.setsockopt(zmq.SNDHWM, queue)
            self.socket.setsockopt(zmq.IMMEDIATE, 1)
            self.socket.setsockopt(zmq.LINGER, int(linger_s * 1000))
        mask = zmq.EVENT_ACCEPTED | zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
        self.monitor = self.socket.get_monitor_socket(mask)
        # The monitor's ZMQ_FD turns readable when commands reach it (a first event after it was
        # read empty). Asking it (about 1 us) is cheaper than asking libzmq (EVENTS, about 5 us)
        # for every received frame.
        self._monitor_fd = select.poll()
        self._monitor_fd.register(self.monitor.get(zmq.FD), select.POLLIN)
        self._monitor_unread = True
        self._rcvtimeo_s = -1.0
        self._sndtimeo_s = -1.0
        self.fd_keys: dict[int, str] = {}
        self.closed_fds: set[int] = set()
        self.serial = 0
        try:
            if dial:
                self.socket.connect(url)
            else:
                self.socket.bind(zmq_address(url, True))
        except zmq.ZMQError as err:
            self.close()
            verb = "connect to" if dial else "bind"
            raise TransportError(f"zmq: cannot {verb} --{role} {url}: {err}") from err

    def _key(self, fd: int, new: bool = False) -> str:
        """The connection key for ``fd``; ``new`` starts a new one unless ``fd`` is still open.

        Monitor events and messages travel separately: a connection's first messages can be read
        before its ACCEPTED event, and its last ones (its EOS) after its DISCONNECTED event, so
        an fd keeps its key until a later connection reuses the fd.
        """
        if fd not in self.fd_keys or (new and fd in self.closed_fds):
            self.serial += 1
            self.fd_keys[fd] = f"zmq-conn-{self.serial}"
            self.closed_fds.discard(fd)
        return self.fd_keys[fd]

    def _read_monitor(self) -> None:
        self._monitor_unread = False
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            fd = int(event["value"])
            if event["event"] in (zmq.EVENT_ACCEPTED, zmq.EVENT_CONNECTED):
                key = self._key(fd, new=True)
                self.events.append(PeerEvent("connect", key, _peer_address(fd)))
            elif event["event"] == zmq.EVENT_DISCONNECTED and fd in self.fd_keys:
                self.closed_fds.add(fd)
                self.events.append(PeerEvent("disconnect", self.fd_keys[fd]))

    def take_events(self) -> list[PeerEvent]:
        self._read_monitor()
        return super().take_events()

    def poll_items(self, want_data: bool, want_events: bool = True) -> list[tuple[Any, int]]:
        items: list[tuple[Any, int]] = [(self.monitor, POLLIN)] if want_events else []
        if want_data:
            items.append((self.socket, POLLIN if self.role == "input" else POLLOUT))
        return items

    def recv_nowait(self) -> tuple[zmq.Frame, str] | None:
        try:
            frame = self.socket.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        return frame, self._frame_key(frame)

    def recv_wait(self, timeout_s: float) -> tuple[zmq.Frame, str] | None:
        if timeout_s != self._rcvtimeo_s:
            self.socket.setsockopt(zmq.RCVTIMEO, max(1, round(timeout_s * 1000)))
            self._rcvtimeo_s = timeout_s
        try:
            frame = self.socket.recv(copy=False)
        except zmq.Again:
            return None
        return frame, self._frame_key(frame)

    def _frame_key(self, frame: zmq.Frame) -> str:
        """The key of the connection ``frame`` came on. Monitor events already queued are read
        first: the OS reuses a closed connection's fd at once, and a new connection's frames
        keyed before its ACCEPTED event would count on the old one (which may have ended)."""
        if (self._monitor_unread or self._monitor_fd.poll(0)) and (
            int(self.monitor.get(zmq.EVENTS)) & _POLLIN
        ):
            self._read_monitor()
        try:
            return self._key(int(frame.get(zmq.SRCFD)))
        except zmq.ZMQError:
            return "zmq-unknown"

    def send_nowait(self, payload: Any) -> bool:
        if isinstance(payload, NngPayload):  # NNG in, ZeroMQ out: NNG frees its message
            payload = payload.bytes
        copy = isinstance(payload, bytes) and len(payload) < 65536
        try:
            self.socket.send(payload, zmq.NOBLOCK, copy=copy)
        except zmq.Again:
            return False
        return True

    def has_input(self) -> bool:
        return bool(int(self.socket.get(zmq.EVENTS)) & _POLLIN)

    def send_wait(self, payload: Any, timeout_s: float) -> bool:
        if timeout_s != self._sndtimeo_s:
            self.socket.setsockopt(zmq.SNDTIMEO, max(1, round(timeout_s * 1000)))
            self._sndtimeo_s = timeout_s
        if isinstance(payload, NngPayload):
            payload = payload.bytes
        copy = isinstance(payload, bytes) and len(payload) < 65536
        try:
            self.socket.send(payload, copy=copy)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.socket.disable_monitor()
        if not self.monitor.closed:
            self.monitor.close(0)
        if not self.socket.closed:
            self.socket.close()


def open_endpoint(
    library: str,
    url: str,
    role: str,
    *,
    dial: bool,
    queue: int,
    linger_s: float,
    context: zmq.Context | None = None,
    max_message_bytes: int = 0,
) -> NngEndpoint | ZmqEndpoint:
    """Open the ``input`` (PULL) or ``output`` (PUSH) side on ``library``.

    ``max_message_bytes`` > 0 (input side) makes the transport refuse larger messages.
    """
    if library == "nng":
        return NngEndpoint(url, role, dial, queue, max_message_bytes)
    return ZmqEndpoint(
        context or zmq.Context.instance(), url, role, dial, queue, linger_s, max_message_bytes
    )
