"""The buffer's options as one validated, frozen dataclass, and parsers for sizes and addresses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from airflow_provider_lclstream.exceptions import BufferConfigError
from airflow_provider_lclstream.transports.base import DEFAULT_MAX_MESSAGE_MB

TRANSPORTS = ("nng", "zmq")
SCHEMES = {
    "nng": ("tcp", "tcp4", "tcp6", "ipc", "inproc", "ws", "tls+tcp", "abstract"),
    "zmq": ("tcp", "ipc", "inproc", "ws"),
}
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_size(text: str | int, what: str = "size") -> int:
    """``"32MB"``, ``"1GiB"``, ``"4096"`` or an int -> a positive number of bytes (or items)."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            raise BufferConfigError(
                f"bad {what} {text!r}: expected a number with an optional unit "
                f"(B, kB, MB, GB, KiB, MiB, GiB), e.g. 32MB"
            )
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise BufferConfigError(f"bad {what} {text!r}: must be greater than 0")
    return value


def parse_hostport(text: str, what: str = "address") -> tuple[str, int]:
    """``"127.0.0.1:9100"`` -> ``("127.0.0.1", 9100)``; port 0 picks a free port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise BufferConfigError(f"bad {what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9100")
    return host.strip("[]") or "0.0.0.0", int(port)


def check_endpoint(url: str, transport: str, side: str) -> None:
    """Reject an unknown transport, or a URL its library cannot listen on or dial."""
    if transport not in TRANSPORTS:
        raise BufferConfigError(
            f"unknown --{side}-transport {transport!r}; choose one of {', '.join(TRANSPORTS)}"
        )
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise BufferConfigError(
            f"bad --{side} URL {url!r}: expected scheme://address, e.g. tcp://127.0.0.1:5000"
        )
    if scheme not in SCHEMES[transport]:
        raise BufferConfigError(
            f"bad --{side} URL {url!r}: {transport} does not support {scheme!r}; "
            f"use one of {', '.join(SCHEMES[transport])}"
        )
    if scheme.startswith(("tcp", "ws", "tls")):
        try:
            port = urlsplit(url).port
        except ValueError as err:
            raise BufferConfigError(f"bad --{side} URL {url!r}: {err}") from err
        if port is None:
            raise BufferConfigError(f"bad --{side} URL {url!r}: a TCP address needs a :PORT")


@dataclass(frozen=True)
class BufferConfig:
    """Everything one buffer needs; ``validate()`` runs on construction.

    Both sides listen by default (producers and consumers dial in); ``dial_input`` /
    ``dial_output`` make a side dial instead, e.g. to stack this buffer behind another one.
    """

    input: str
    output: str
    input_transport: str = "zmq"
    output_transport: str = "zmq"
    capacity_bytes: int = 256 * 2**20
    capacity_messages: int = 10_000
    expect_producers: int | None = None
    metrics: str | None = None
    idle_timeout_s: float | None = None
    end_after_idle_s: float | None = None
    """For producers without end-of-stream records: once data came, this long without input
    ends the stream as complete-unknown (exit status ``EXIT_ENDED_BY_IDLE``), not as a failure."""
    drain_timeout_s: float = 30.0
    callback: str | None = None
    callback_secret: str | None = None
    jobid: str | None = None
    persistent: bool = False
    dial_input: bool = False
    dial_output: bool = False
    socket_queue: int = 2
    log_interval_s: float = 5.0
    report: str | None = None
    max_message_bytes: int = int(DEFAULT_MAX_MESSAGE_MB * 10**6)
    extra_labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_endpoint(self.input, self.input_transport, "input")
        check_endpoint(self.output, self.output_transport, "output")
        if self.input == self.output and not (self.dial_input or self.dial_output):
            raise BufferConfigError(f"--input and --output are the same URL {self.input!r}")
        if self.max_message_bytes < 0:
            raise BufferConfigError(
                f"bad --max-message-mb {self.max_message_bytes / 1e6!r}: must be >= 0 (0: none)"
            )
        for name in ("capacity_bytes", "capacity_messages", "socket_queue"):
            if int(getattr(self, name)) <= 0:
                raise BufferConfigError(f"bad {name} {getattr(self, name)!r}: must be > 0")
        if self.expect_producers is not None and self.expect_producers <= 0:
            raise BufferConfigError(
                f"bad --expect-producers {self.expect_producers!r}: must be >= 1"
            )
        for name in ("idle_timeout_s", "drain_timeout_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise BufferConfigError(f"bad {name} {value!r}: must be >= 0 seconds")
        if self.end_after_idle_s is not None and self.end_after_idle_s <= 0:
            raise BufferConfigError(
                f"bad --end-after-idle {self.end_after_idle_s!r}: must be > 0 seconds"
            )
        if self.metrics is not None:
            parse_hostport(self.metrics, "--metrics address")
        if self.callback is not None and not self.callback.startswith(("http://", "https://")):
            raise BufferConfigError(
                f"bad --callback URL {self.callback!r}: expected http:// or https://"
            )
        if self.callback_secret and not self.callback:
            raise BufferConfigError("--callback-secret given without --callback URL")
