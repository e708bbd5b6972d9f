"""``lclstreamer``: run the LCLStreamer chain on every MPI rank (``mpiexec -n N lclstreamer -c F``).

Each rank prints a progress line every few seconds and a JSON summary at the end; rank 0 also
prints the totals of all ranks as one JSON line prefixed ``TOTAL``. A rank stopped by SIGTERM (a
cancelled job: SLURM and the local backend send it before SIGKILL) prints its summary as it
stands, with ``"terminated": true``, and exits 143 at once: the events it counted are every
event it read, so a transfer that lost its buffer can say how many never arrived. With
``LCLSTREAM_TALLY_DIR`` set (the streamer job sets it), each rank also keeps its counters in a
file that outlives a rank killed in C, e.g. by psana on a corrupt big-data dgram
(``streamer/tally.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.protocol import emit_line


def parse_settings(pairs: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LCLStreamError(f"--set {pair!r}: expected NAME=VALUE")
        settings[key.strip()] = value
    return settings


def load_config(path: str, settings: dict[str, str]) -> Any:
    """Template values fill ``{{ name }}``; other ``--set`` keys patch flat-format paths."""
    from airflow_provider_lclstream.config.loader import parse_streamer_config, template_variables

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise LCLStreamError(f"cannot read configuration file {path}: {err}") from None
    names = template_variables(text)
    values = {k: v for k, v in settings.items() if k in names}
    patch = {k: yaml.safe_load(v) for k, v in settings.items() if k not in names}
    return parse_streamer_config(text, values, patch=patch)


DEFAULT_CONFIG = "lclstreamer.yaml"
"""The file read when ``--config`` is not given, in the working directory (upstream's default)."""


def config_path(given: str | None) -> str:
    """``given``, or ``./lclstreamer.yaml`` when it exists; a clear error when it does not."""
    if given is not None:
        return given
    default = Path.cwd() / DEFAULT_CONFIG
    if not default.is_file():
        raise LCLStreamError(
            f"no --config given and no {DEFAULT_CONFIG} in the working directory {Path.cwd()}; "
            f"create {DEFAULT_CONFIG} there or pass --config FILE"
        )
    return DEFAULT_CONFIG


def mpi_partition() -> tuple[Any, int, int]:
    """(communicator or None, rank, size); without mpi4py a single rank."""
    try:
        from mpi4py import MPI
    except ImportError:
        return None, 0, 1
    comm = MPI.COMM_WORLD
    return comm, comm.Get_rank(), comm.Get_size()


class RankBarrier:
    """An MPI barrier each rank passes exactly once per run, whether the engine used it or not.

    The engine calls it (Simplon) after a rank's last image; ``main`` calls it again after the
    run, which does nothing the second time, so a rank that failed early still meets the others.
    """

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.passed = False

    def __call__(self) -> None:
        if not self.passed:
            self.passed = True
            if self.comm is not None:
                self.comm.Barrier()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lclstreamer",
        description="Stream events (psana2, psana1, synthetic, HDF5) through a processing "
        "pipeline and serializer to files or NNG/ZeroMQ sockets. Reads upstream LCLStreamer "
        "config files, flat or sectioned. Run under 'mpiexec -n N' for N producer ranks.",
        epilog="examples:\n"
        "  mpiexec -n 4 lclstreamer -c lclstreamer.yaml\n"
        "  lclstreamer -c lclstreamer.yaml --check\n"
        "  mpiexec -n 4 lclstreamer --standby tcp://0.0.0.0:0 --idle-timeout 600\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        "-c",
        default=None,
        help=f"LCLStreamer YAML config file (default: ./{DEFAULT_CONFIG}, as upstream)",
    )
    parser.add_argument(
        "--num-events", "-n", type=int, default=None, help="stop after N events on each rank"
    )
    parser.add_argument("--debug", "-d", action="store_true", help="debug logging, tracebacks")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fill a template's {{ NAME }}, or set a flat config path, e.g. "
        "--set 'data_handlers[0].urls=[tcp://127.0.0.1:5000]'",
    )
    parser.add_argument(
        "--send-timeout", type=float, default=60.0, help="seconds to wait for a receiver (60)"
    )
    parser.add_argument(
        "--progress-every", type=float, default=5.0, help="seconds between progress lines (5)"
    )
    parser.add_argument(
        "--standby",
        metavar="BIND",
        default=None,
        help="warm streamer: start every rank, import psana and the serializers, then wait for "
        "one run on this control socket (rank 0 binds it; port 0 picks a free one), e.g. "
        "--standby tcp://0.0.0.0:0 (streamer/standby.py); --config is not read",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        help="with --standby: exit 0 unused after this many idle seconds (600)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.num_events is not None and args.num_events < 0:
        print("lclstreamer: --num-events must be >= 0", file=sys.stderr)
        return 2
    if args.standby is not None:
        return standby(args)
    try:
        args.config = config_path(args.config)
    except LCLStreamError as err:
        print(f"lclstreamer: {err}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, parse_settings(args.set))
    except (LCLStreamError, ValueError) as err:
        print(f"lclstreamer: invalid configuration {args.config}: {err}", file=sys.stderr)
        return 2
    if args.check:
        print(f"lclstreamer: {args.config} is valid")
        return 0
    return stream(config, args, *mpi_partition())


def standby(args: argparse.Namespace) -> int:
    """``--standby``: wait for one run on the control socket, then :func:`stream` it on every
    rank (``streamer/standby.py``); 0 when it ended unused (stopped or idle)."""
    from airflow_provider_lclstream.config.loader import parse_streamer_config
    from airflow_provider_lclstream.streamer import standby as warm

    if not args.standby.startswith("tcp://") or args.idle_timeout <= 0:
        print(
            "lclstreamer: --standby takes tcp://HOST:PORT (port 0: any free one) and "
            "--idle-timeout a positive number of seconds",
            file=sys.stderr,
        )
        return 2
    comm, rank, size = mpi_partition()
    loaded = warm.preload()
    message: dict[str, Any] | None = None
    server = None
    if rank == 0:
        try:
            server = warm.ControlServer(args.standby, parse_streamer_config, {"ranks": size})
        except Exception as err:  # zmq.ZMQError: the address is taken or not ours
            emit_line(f"lclstreamer: cannot bind {args.standby}: {err}", sys.stderr)
            message = {"error": str(err)}
        if server is not None:
            server.start()
            emit_line(f"lclstreamer: standby: {size} rank(s), imported {', '.join(loaded)}",
                      sys.stderr)  # fmt: skip
            emit_line(warm.standby_line(warm.standby_host(), server.port))
            message = server.wait(args.idle_timeout)
    message = warm.share(comm, rank, size, message)
    if message is not None and "error" in message:
        return 2
    if message is None:
        if server is not None:
            server.close()
        if rank == 0:
            emit_line("lclstreamer: standby ended unused (stopped, or idle for "
                      f"{args.idle_timeout:g} s)", sys.stderr)  # fmt: skip
        return 0
    if rank == 0:
        emit_line(f"lclstreamer: standby: claimed by {message.get('claim')}", sys.stderr)
    config = parse_streamer_config(message["config"], {})
    args.num_events = message.get("num_events")
    try:
        return stream(config, args, comm, rank, size)
    finally:
        if server is not None:
            server.close()


def stream(config: Any, args: argparse.Namespace, comm: Any, rank: int, size: int) -> int:
    """Run ``config`` on this rank (``args``: num_events, send_timeout, progress_every, debug):
    the summary line, the ``TOTAL`` line on rank 0, and the exit code."""
    from airflow_provider_lclstream.streamer.allocator import keep_freed_memory
    from airflow_provider_lclstream.streamer.engine import Streamer
    from airflow_provider_lclstream.streamer.sources.base import Partition

    keep_freed_memory()

    def progress(stats: dict[str, Any]) -> None:
        emit_line(
            f"[rank {rank}] {stats['events']} events, {stats['events_per_s']:.1f} ev/s, "
            f"{stats['mb_per_s']:.1f} MB/s",
            sys.stderr,
        )

    barrier = RankBarrier(comm if size > 1 else None)
    streamer = Streamer(
        config, Partition(rank, size), args.send_timeout, progress, args.progress_every, barrier
    )
    from airflow_provider_lclstream.streamer.tally import open_tally

    tally = open_tally(rank)  # counts that outlive a rank killed in C (streamer/tally.py)
    if threading.current_thread() is threading.main_thread():  # (called in-process elsewhere)
        signal.signal(signal.SIGTERM, lambda signum, _frame: terminated(streamer, signum, tally))
    if tally is not None:
        streamer.checkpoint = lambda counters: tally.write(counters.summary())
        streamer.count_event = tally.count
    error: str | None = None
    try:
        summary = streamer.run(args.num_events)
    except Exception as err:  # reported below, every rank still reaches the gather
        if args.debug:
            logging.exception("rank %d failed", rank)
        error = f"{type(err).__name__}: {err}"
        summary = streamer.counters.summary()
    summary["error"] = error
    if tally is not None:
        tally.write(summary, final=True)
    emit_line(json.dumps(summary))
    if error and comm is not None and size > 1 and streamer.coupled and not streamer.stream_ended:
        # psana2's ranks wait on each other: the others would wait forever for this one.
        # (A rank whose stream ended, e.g. a stalled live run, fails after the gather instead:
        # the others end too, and every rank's messages and counts get out.)
        emit_line(f"lclstreamer: rank {rank} failed: {error}; ending all ranks", sys.stderr)
        comm.Abort(1)
    barrier()
    all_summaries = comm.gather(summary, root=0) if comm is not None else [summary]
    if rank == 0 and all_summaries:
        emit_line("TOTAL " + json.dumps(totals(all_summaries)))
    if error:
        emit_line(f"lclstreamer: rank {rank} failed: {error}", sys.stderr)
        return 1
    return 0


def terminated(streamer: Any, signum: int, tally: Any = None) -> None:
    """SIGTERM: this rank's summary as it stands (``"terminated": true``), then exit at once.

    The counters count an event when it is read, before it is batched and sent, so the line
    covers every event this rank produced; the handlers' queues are not drained (the buffer may
    be gone). The summary goes to the rank's tally first, marked final (the job prints it after
    the launcher: ``srun`` may be gone before this line reaches it), then to stdout in one
    ``os.write``: no buffered stream is touched inside a signal handler.
    """
    summary = streamer.counters.summary()
    summary["error"] = f"terminated by signal {signum}"
    summary["terminated"] = True
    if tally is not None:
        with contextlib.suppress(Exception):
            tally.write(summary, final=True)
    data = (json.dumps(summary) + "\n").encode()
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(1, data) :]
    os._exit(128 + signum)


def totals(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("events", "batches", "messages", "bytes", "skipped", "filtered")
    out: dict[str, Any] = {k: sum(s.get(k) or 0 for s in summaries) for k in keys}
    elapsed = max(s["elapsed_s"] for s in summaries) or 1e-9
    out["ranks"] = len(summaries)
    out["elapsed_s"] = elapsed
    out["mb_per_s"] = round(out["bytes"] / elapsed / 1e6, 3)
    out["per_rank_events"] = [s["events"] for s in summaries]
    out["errors"] = [s["error"] for s in summaries if s.get("error")]
    return out


if __name__ == "__main__":
    sys.exit(main())
