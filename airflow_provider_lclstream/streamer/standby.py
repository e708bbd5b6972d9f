"""A warm streamer: ``lclstreamer --standby`` ranks that wait for one run (issue #19).

``mpiexec -n N lclstreamer --standby tcp://0.0.0.0:0 --idle-timeout S`` starts every rank, has
MPI up and the engine, serializers and psana imported, and waits. Rank 0 answers a control
socket (ZeroMQ REQ/REP, one JSON object each way) and prints where it listens
(:func:`standby_line`) on stdout, i.e. into the job's log:

- ``{"op": "ping"}``: ``{"ok": true, "state": "idle" | "running", "ranks": N, ...}``.
- ``{"op": "run", "config": TEXT, "num_events": N | null, "claim": ID}``: the config (the text of
  an ``lclstreamer.yaml``) is validated first; a bad one is answered ``{"ok": false, "error":
  ...}`` and the standby keeps waiting. A good one is answered ``{"ok": true, "accepted":
  true}`` and handed to every rank, which then run it exactly as ``lclstreamer -c`` would (the
  same summary lines, tally and exit codes). The first accepted run is the only one: every
  later ``run`` is answered ``{"ok": false, "busy": true, "claim": FIRST}``. That makes a claim
  atomic on the job itself: two transfers never share one standby job.
- ``{"op": "stop"}``: an idle standby exits 0 unused; a running one answers busy (cancel its
  job to stop it).

After ``S`` idle seconds the standby exits 0 unused. The other ranks wait for rank 0 without
spinning (MPI's blocking calls busy-poll a core each): they probe every
:data:`RANK_POLL_S` seconds.

The client side (:func:`request`, :func:`ping`, :func:`claim`) is what a pool and
``run_streamer`` use (``transfer/warm_pool.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    from collections.abc import Callable

STANDBY_PREFIX = "lclstreamer: standby on "
RANK_POLL_S = 0.01
"""How often a waiting rank other than 0 looks for rank 0's message."""
RUN_TAG = 719
"""The MPI tag of rank 0's message to the other ranks (the run, or None: exit)."""
DEFAULT_TIMEOUT_S = 2.0
"""How long a client waits for a standby's answer before it calls the standby unreachable."""


class StandbyUnreachable(LCLStreamError):
    """A standby streamer did not answer in time (dead, hung, or never started)."""


def standby_line(host: str, port: int) -> str:
    return f"{STANDBY_PREFIX}host {host} port {port}"


def parse_standby(text: str) -> tuple[str, int] | None:
    """(host, port) of the last :func:`standby_line` in a job's log, or None.

    The line may start mid-line: its own write is whole, but another process sharing the log
    (psana's C code, a rank's ``print``) can have left a line without its newline yet."""
    found: tuple[str, int] | None = None
    for line in text.splitlines():
        at = line.rfind(STANDBY_PREFIX)
        if at < 0:
            continue
        parts = line[at + len(STANDBY_PREFIX) :].split()
        if len(parts) == 4 and parts[0] == "host" and parts[2] == "port" and parts[3].isdigit():
            found = (parts[1], int(parts[3]))
    return found


# -- rank 0: the control socket ---------------------------------------------------------------
class ControlServer(threading.Thread):
    """Rank 0's control socket, answered in this thread; the main thread waits in :meth:`wait`.

    ``validate`` parses a run's config text and raises (``LCLStreamError``, ``ValueError``) for
    a bad one.
    """

    def __init__(self, bind: str, ranks: int, validate: Callable[[str], Any]) -> None:
        super().__init__(name="lclstreamer-standby", daemon=True)
        import zmq

        self.ranks = ranks
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
                "ranks": self.ranks,
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
                return {"ok": False, "error": "'config' must be the text of an lclstreamer.yaml"}
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
            return {"ok": True, "accepted": True, "ranks": self.ranks}
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


def share(comm: Any, rank: int, size: int, message: dict[str, Any] | None) -> Any:
    """Rank 0's ``message`` on every rank. The others probe every :data:`RANK_POLL_S` s instead
    of blocking in MPI (which would spin a core each while the standby waits)."""
    if comm is None or size == 1:
        return message
    if rank == 0:
        for other in range(1, size):
            comm.send(message, dest=other, tag=RUN_TAG)
        return message
    while not comm.iprobe(source=0, tag=RUN_TAG):
        time.sleep(RANK_POLL_S)
    return comm.recv(source=0, tag=RUN_TAG)


def preload() -> list[str]:
    """Import what a run needs (engine, serializers, transports, psana when installed), so that
    none of it is on a claimed run's critical path; the names that were importable."""
    import importlib

    loaded = []
    for name in (
        "airflow_provider_lclstream.streamer.engine",
        "airflow_provider_lclstream.streamer.sources.psana2",
        "airflow_provider_lclstream.streamer.sources.synthetic",
        "airflow_provider_lclstream.streamer.serializers.hdf5",
        "airflow_provider_lclstream.streamer.serializers.simplon",
        "airflow_provider_lclstream.transports.zmq_transport",
        "airflow_provider_lclstream.transports.nng_transport",
        "h5py",
        "hdf5plugin",
        "psana",
    ):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        loaded.append(name)
    return loaded


def standby_host() -> str:
    return socket.gethostname()


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
            raise StandbyUnreachable(f"standby streamer at {url}: no answer within {timeout_s} s")
        return json.loads(sock.recv())
    finally:
        sock.close(0)


def ping(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    answer = request(url, {"op": "ping"}, timeout_s)
    return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}


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
    answer = request(url, message, timeout_s)
    return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}


def stop(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    answer = request(url, {"op": "stop"}, timeout_s)
    return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}


__all__ = [
    "ControlServer",
    "StandbyUnreachable",
    "claim",
    "parse_standby",
    "ping",
    "preload",
    "request",
    "share",
    "standby_line",
    "stop",
]
