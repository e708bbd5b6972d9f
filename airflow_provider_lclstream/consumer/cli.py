"""``lclstream-receive``: pull messages, optionally write each as a file, print a JSON summary.

With ``--out DIR`` each message becomes ``DIR/<prefix>_<index>.h5`` and one line per message goes
to ``DIR/<prefix>_messages.jsonl`` (arrival time, producer rank, sequence, bytes, events; see
``consumer/records.py``), written as messages arrive.

SIGTERM (a cancelled job) ends the receive between messages: a message being written is
finished first, and the summary line still comes, with ``"terminated": true`` and
``events_delivered``, the events of every message handled (written, with ``--out``), exactly.

Exit status: 0 when every expected producer ended and nothing is missing; 3 when the stream was
ended by ``--end-after-idle`` (no end-of-stream record from some producer: completeness unknown,
``"eos": false`` in the summary) with nothing wrong in what arrived; 1 on a timeout, a gap or a
corrupt message; 2 on bad arguments.

``--standby tcp://HOST:PORT`` (port 0: any free one) starts a warm consumer (issue #19): it
imports the receive path, answers a control socket (``transports/control.py``) and prints where
on stdout. A ``run`` whose ``config`` is a JSON list of this command's arguments (``--url``,
``--out``, ...) is checked as the command line would be; once accepted it runs exactly as if
started with those arguments. After ``--standby-timeout`` idle seconds it exits 0 unused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages
from airflow_provider_lclstream.consumer.records import MessageRecord, records_path
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.protocol import EXIT_ENDED_BY_IDLE, emit_line, is_hdf5
from airflow_provider_lclstream.transports import control
from airflow_provider_lclstream.transports.base import DEFAULT_MAX_MESSAGE_MB, max_message_bytes

PROGRAM = "lclstream-receive"
STANDBY_ONLY = ("--standby", "--standby-timeout")
"""Options a claimed run's arguments may not carry."""
EXAMPLES = """examples:
  lclstream-receive --url tcp://0.0.0.0:5001 --out run14/          # producers dial here
  lclstream-receive --url tcp://buffer-node:5001 --dial --out run14/ --timeout 600
  lclstream-receive --standby tcp://0.0.0.0:0 --standby-timeout 600   # a warm consumer
"""


class ArgumentError(LCLStreamError):
    """Bad arguments (a claimed run's: the standby answers with the message and keeps waiting)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArgumentError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Receive LCLStreamer messages from producers or a buffer (NNG or ZeroMQ).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", help="e.g. tcp://127.0.0.1:5000 (required)")
    parser.add_argument("--transport", choices=["zmq", "nng"], default="zmq")
    role = parser.add_mutually_exclusive_group()
    role.add_argument(
        "--bind", dest="bind", action="store_true", default=True, help="listen (default)"
    )
    role.add_argument(
        "--dial", dest="bind", action="store_false", help="connect to a server/buffer"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="write each message as a file in this directory, and PREFIX_messages.jsonl",
    )
    parser.add_argument("--prefix", default="msg", help="file name prefix with --out (msg)")
    parser.add_argument(
        "--expect-producers", type=int, default=1, help="end-of-stream records to wait for"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="longest wait for a message, s")
    parser.add_argument(
        "--end-after-idle",
        type=float,
        metavar="S",
        help="for producers that send no end-of-stream record (upstream's): once data came, S s "
        "without a message end the stream; exit status 3, '\"eos\": false' in the summary",
    )
    parser.add_argument(
        "--max-message-mb",
        type=float,
        default=DEFAULT_MAX_MESSAGE_MB,
        metavar="MB",
        help="refuse messages over MB megabytes (10**6 bytes) before buffering them: the "
        "connection carrying one is dropped and what it carried counts as missing; 0: no limit "
        f"(default {DEFAULT_MAX_MESSAGE_MB:g})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--standby",
        metavar="URL",
        help="a warm consumer: wait on this control socket (tcp://HOST:PORT, port 0: any free "
        "one) for one run's arguments instead of taking --url here",
    )
    parser.add_argument(
        "--standby-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="with --standby: exit 0 unused after S idle seconds (default 600)",
    )
    return parser


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the (non-standby) arguments, or None."""
    if not args.url:
        return "--url is required (or --standby URL)"
    if args.expect_producers < 1:
        return "--expect-producers must be >= 1"
    if args.timeout <= 0:
        return "--timeout must be > 0"
    if args.end_after_idle is not None and args.end_after_idle <= 0:
        return "--end-after-idle must be > 0"
    if args.max_message_mb < 0:
        return "--max-message-mb must be >= 0 (0: no limit)"
    return None


def run_args(text: str) -> argparse.Namespace:
    """A claimed run's arguments (a JSON list of strings), checked as :func:`main` checks its
    command line; raises :class:`ArgumentError` naming what is wrong."""
    try:
        argv = json.loads(text)
    except ValueError as err:
        raise ArgumentError(f"the run's arguments are not JSON: {err}") from None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ArgumentError("the run's arguments must be a JSON list of strings")
    taken = [a for a in argv if a.split("=", 1)[0] in STANDBY_ONLY]
    if taken:
        raise ArgumentError(f"a run's arguments cannot carry {', '.join(taken)}")
    parser = build_parser()
    parser.__class__ = _Parser
    args = parser.parse_args(argv)
    problem = check_args(args)
    if problem:
        raise ArgumentError(problem)
    return args


def standby(args: argparse.Namespace) -> argparse.Namespace | None:
    """``--standby``: answer the control socket, print where, and wait; the claimed run's
    arguments, or None when it ended unused (stopped, or idle). Raises :class:`ArgumentError`
    for bad standby options."""
    if not args.standby.startswith("tcp://") or args.standby_timeout <= 0:
        raise ArgumentError(
            "--standby takes tcp://HOST:PORT (port 0: any free one) and --standby-timeout a "
            "positive number of seconds"
        )
    if args.url:
        raise ArgumentError("--standby takes a run's --url from its claim, not here")
    try:
        server = control.ControlServer(args.standby, run_args, {"role": "consumer"})
    except Exception as err:  # zmq.ZMQError: the address is taken or not ours
        raise ArgumentError(f"cannot bind --standby {args.standby}: {err}") from None
    server.start()
    emit_line(control.standby_line(socket.gethostname(), server.port, PROGRAM))
    message = server.wait(args.standby_timeout)
    if message is None:
        server.close()
        emit_line(f"{PROGRAM}: standby ended unused (stopped, or idle for "
                  f"{args.standby_timeout:g} s)", sys.stderr)  # fmt: skip
        return None
    emit_line(f"{PROGRAM}: standby: claimed by {message.get('claim')}", sys.stderr)
    return run_args(message["config"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.standby:
        try:
            claimed = standby(args)
        except ArgumentError as err:
            print(f"{PROGRAM}: {err}", file=sys.stderr)
            return 2
        if claimed is None:
            return 0
        args = claimed
    problem = check_args(args)
    if problem:
        print(f"{PROGRAM}: {problem}", file=sys.stderr)
        return 2
    records = None
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        records = open(records_path(args.out, args.prefix), "w")  # noqa: SIM115 (closed below)
    report = ReceiveReport(args.expect_producers)
    files = 0
    delivered = 0  # events of the messages handled below, whatever SIGTERM interrupts
    stop = TermGuard()
    try:
        for message in receive_messages(
            args.url,
            args.transport,
            bind=args.bind,
            expect_producers=args.expect_producers,
            timeout_s=args.timeout,
            report=report,
            max_message_bytes=max_message_bytes(args.max_message_mb),
            end_after_idle_s=args.end_after_idle,
        ):
            stop.busy = True
            if args.out is not None and records is not None:
                suffix = "h5" if is_hdf5(message.raw) else "bin"
                final = args.out / f"{args.prefix}_{message.index:06d}.{suffix}"
                temporary = final.with_name(f".{final.name}.tmp")
                temporary.write_bytes(message.raw)
                os.replace(temporary, final)
                files += 1
                records.write(MessageRecord.of(message, final.name).model_dump_json() + "\n")
                records.flush()
            delivered += message.events
            stop.done_with_message()
            if not args.quiet and report.messages % 100 == 0:
                print(
                    f"received {report.messages} messages, {report.bytes / 1e6:.1f} MB",
                    file=sys.stderr,
                )
    except LCLStreamError as err:
        print(f"lclstream-receive: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        stop.restore()
        if records is not None:
            records.close()
    summary = report.summary()
    summary["files"] = files
    summary["events_delivered"] = delivered
    summary["terminated"] = stop.terminated
    summary["out"] = str(args.out) if args.out else None
    print(json.dumps(summary), flush=True)
    for name, counts in report.producers.items():
        if counts.ended is None:
            print(
                f"lclstream-receive: producer {name}: {counts.received} messages, "
                f"{counts.events_received} events received, no end-of-stream record (what it "
                "produced is unknown: at least what arrived)",
                file=sys.stderr,
            )
    if report.ok:
        return 0
    return EXIT_ENDED_BY_IDLE if report.idle_ok else 1


class TermGuard:
    """SIGTERM as ``KeyboardInterrupt``, but never while a message is being handled.

    While ``busy`` (from the loop taking a message until it is written and counted) the signal
    is only noted, and raised by ``done_with_message``; elsewhere (waiting for the next message)
    it is raised at once. In the main thread only (the CLI may run in-process elsewhere).
    """

    def __init__(self) -> None:
        self.busy = False
        self.terminated = False
        self._previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, _signum: int, _frame: Any) -> None:
        self.terminated = True
        if not self.busy:
            raise KeyboardInterrupt

    def done_with_message(self) -> None:
        self.busy = False
        if self.terminated:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


if __name__ == "__main__":
    sys.exit(main())
