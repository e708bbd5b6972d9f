"""The standby control socket: one JSON object each way over ZeroMQ REQ/REP (issue #19).

A standby job (``lclstreamer --standby``, ``lclstream-buffer --standby``) has everything
imported and waits for one run. It answers on a control socket and prints where it listens
(:func:`standby_line`) into its job's log, where a pool finds it (:func:`parse_standby`):

- ``{"op": "ping"}``: ``{"ok": true, "state": "idle" | "running" | ..., "pid", "uptime_s",
  ...}`` plus what the program describes (a streamer its ``ranks``, a buffer its ``role``).
- ``{"op": "run", "config": TEXT, "num_events": N | null, "claim": ID}``: ``config`` is the
  program's run (a streamer: the text of an ``lclstreamer.yaml``; a buffer: its command-line
  arguments as a JSON list), validated first. A bad one is answered ``{"ok": false, "error":
  ...}`` and the standby keeps waiting; a good one ``{"ok": true, "accepted": true}``. The first
  accepted run is the only one: every later ``run`` is answered ``{"ok": false, "busy": true,
  "claim": FIRST}``, so a claim is atomic on the job itself: two transfers never share one
  standby job.
- ``{"op": "stop"}``: an idle standby exits 0 unused; a running one answers busy (cancel its job
  to stop it).

The server (:class:`ControlServer`) answers in a thread of its own; the program's main thread
waits in :meth:`ControlServer.wait`. The client side (:func:`request`, :func:`ping`,
:func:`claim`, :func:`stop`) is what a pool and the transfer tasks use (``transfer/warm_pool.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_TIMEOUT_S = 2.0
"""How long a client waits for a standby's answer before it calls the standby unreachable."""


class StandbyUnreachable(LCLStreamError):
    """A standby job did not answer in time (dead, hung, or never started)."""


def standby_prefix(program: str) -> str:
    return f"{program}: standby on "


def standby_line(host: str, port: int, program: str = "lclstreamer") -> str:
    """The line a standby prints once its control socket listens."""
    return f"{standby_prefix(program)}host {host} port {port}"


def parse_standby(text: str, program: str = "lclstreamer") -> tuple[str, int] | None:
    """(host, port) of the last :func:`standby_line` of ``program`` in a job's log, or None.

    The line may start mid-line: its own write is whole, but another process sharing the log
    (psana's C code, a rank's ``print``) can have left a line without its newline yet."""
    prefix = standby_prefix(program)
    found: tuple[str, int] | None = None
    for line in text.splitlines():
        at = line.rfind(prefix)
        if at < 0:
            continue
        parts = line[at + len(prefix) :].split()
        if len(parts) == 4 and parts[0] == "host" and parts[2] == "port" and parts[3].isdigit():
            found = (parts[1], int(parts[3]))
    return found


class ControlServer(threading.Thread):
    """The standby's control socket, answered in this thread; the main thread waits in
    :meth:`wait`.

    ``validate`` checks a run's ``config`` text and raises (``LCLStreamError``, ``ValueError``)
    for a bad one; ``info`` goes into every ping's and every acceptance's answer.
    """

    def __init__(
        self, bind: str, validate: Callable[[str], Any], info: dict[str, Any] | None = None
    ) -> None:
        super().__init__(name="lclstream-standby", daemon=True)
        import zmq

        self.info = dict(info or {})
        self.validate = validate
        self.started = time.time()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        if bind.endswith(":0"):
            self.port = self._socket.bind_to_random_port(bind[: -len(":0")])
        else:
            self._socket.bind(bind)
            self.port = int(bind.rsplit(":", 1)[1])
        self._handoff: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._closing = threading.Event()
        self.accepted: dict[str, Any] | None = None
        self.state = "idle"

    def run(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._closing.is_set():
            if not poller.poll(200):
                continue
            try:
                message = json.loads(self._socket.recv())
                if not isinstance(message, dict):
                    raise ValueError("not a JSON object")
                reply = self.answer(message)
            except ValueError as err:
                reply = {"ok": False, "error": f"bad request: {err}"}
            self._socket.send(json.dumps(reply).encode())
        self._socket.close(0)
        self._context.term()

    def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "ping":
            return {
                "ok": True,
                "state": self.state,
                **self.info,
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 3),
                **({"claim": self.accepted.get("claim")} if self.accepted else {}),
            }
        if op == "stop":
            if self.state != "idle":
                return {"ok": False, "busy": True, "claim": (self.accepted or {}).get("claim")}
            self.state = "stopping"
            self._handoff.put(None)
            return {"ok": True, "stopping": True}
        if op == "run":
            if self.state != "idle":
                return {"ok": False, "busy": True, "claim": (self.accepted or {}).get("claim")}
            text = message.get("config")
            num_events = message.get("num_events")
            if not isinstance(text, str):
                return {"ok": False, "error": "'config' must be a string (the run's settings)"}
            if num_events is not None and (not isinstance(num_events, int) or num_events < 0):
                return {"ok": False, "error": "'num_events' must be an integer >= 0 or null"}
            try:
                self.validate(text)
            except (LCLStreamError, ValueError) as err:
                return {"ok": False, "error": f"invalid configuration: {err}"}
            self.state = "running"
            self.accepted = {
                "config": text,
                "num_events": num_events,
                "claim": message.get("claim"),
            }
            self._handoff.put(self.accepted)
            return {"ok": True, "accepted": True, **self.info}
        return {"ok": False, "error": f"unknown op {op!r}; expected ping, run or stop"}

    def wait(self, idle_timeout_s: float) -> dict[str, Any] | None:
        """The accepted run, or None (stopped, or idle for ``idle_timeout_s``: then later runs
        are answered busy until the socket closes)."""
        try:
            return self._handoff.get(timeout=idle_timeout_s)
        except queue.Empty:
            self.state = "expired"
            return None

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(RuntimeError):
            self.join(timeout=2)


# -- the client side -----------------------------------------------------------------------------
def request(url: str, message: dict[str, Any], timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Send one control message to the standby at ``url`` and return its answer; raises
    :class:`StandbyUnreachable` when none comes within ``timeout_s``."""
    import zmq

    context: Any = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(url)
        sock.send(json.dumps(message).encode())
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise StandbyUnreachable(f"standby job at {url}: no answer within {timeout_s} s")
        return json.loads(sock.recv())
    finally:
        sock.close(0)


def _as_answer(answer: Any) -> dict[str, Any]:
    return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}


def ping(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    return _as_answer(request(url, {"op": "ping"}, timeout_s))


def claim(
    url: str,
    config_text: str,
    num_events: int | None,
    claim_id: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Hand a run to the standby at ``url``: ``{"ok": true, "accepted": true}`` when it took it,
    ``{"ok": false, "busy": true}`` when another claim had, ``{"ok": false, "error": ...}``."""
    message = {"op": "run", "config": config_text, "num_events": num_events, "claim": claim_id}
    return _as_answer(request(url, message, timeout_s))


def stop(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    return _as_answer(request(url, {"op": "stop"}, timeout_s))


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ControlServer",
    "StandbyUnreachable",
    "claim",
    "parse_standby",
    "ping",
    "request",
    "standby_line",
    "standby_prefix",
    "stop",
]
