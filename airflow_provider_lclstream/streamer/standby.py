"""A warm streamer: ``lclstreamer --standby`` ranks that wait for one run (issue #19).

``mpiexec -n N lclstreamer --standby tcp://0.0.0.0:0 --idle-timeout S`` starts every rank, has
MPI up and the engine, serializers and psana imported, and waits. Rank 0 answers a control
socket (``transports/control.py``: ZeroMQ REQ/REP, one JSON object each way) and prints where it
listens (:func:`standby_line`) on stdout, i.e. into the job's log. A ``run``'s ``config`` is the
text of an ``lclstreamer.yaml``; once accepted it is handed to every rank, which then run it
exactly as ``lclstreamer -c`` would (the same summary lines, tally and exit codes). A ping's
answer carries the job's ``ranks``.

After ``S`` idle seconds the standby exits 0 unused. The other ranks wait for rank 0 without
spinning (MPI's blocking calls busy-poll a core each): they probe every
:data:`RANK_POLL_S` seconds.

The client side (:func:`request`, :func:`ping`, :func:`claim`) is what a pool and
``run_streamer`` use (``transfer/warm_pool.py``).
"""

from __future__ import annotations

import socket
import time
from typing import Any

from airflow_provider_lclstream.transports import control
from airflow_provider_lclstream.transports.control import (
    DEFAULT_TIMEOUT_S,
    ControlServer,
    StandbyUnreachable,
    claim,
    ping,
    request,
    stop,
)

PROGRAM = "lclstreamer"
STANDBY_PREFIX = control.standby_prefix(PROGRAM)
RANK_POLL_S = 0.01
"""How often a waiting rank other than 0 looks for rank 0's message."""
RUN_TAG = 719
"""The MPI tag of rank 0's message to the other ranks (the run, or None: exit)."""


def standby_line(host: str, port: int) -> str:
    return control.standby_line(host, port, PROGRAM)


def parse_standby(text: str) -> tuple[str, int] | None:
    """(host, port) of the last :func:`standby_line` in a job's log, or None."""
    return control.parse_standby(text, PROGRAM)


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


__all__ = [
    "DEFAULT_TIMEOUT_S",
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
