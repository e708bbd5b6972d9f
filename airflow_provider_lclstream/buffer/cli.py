"""``lclstream-buffer``: a thin argparse shell over ``Buffer``.

Exit codes: 0 every stream complete and delivered; 1 a producer never ended, data was left or
no consumer got the end-of-stream record; 2 bad options or a socket that cannot be opened; 3
(``EXIT_ENDED_BY_IDLE``) a stream ended by ``--end-after-idle`` and delivered, its completeness
unknown because some producer sent no end-of-stream record.

The callback secret never travels on the command line (where ``ps`` shows it): it is read from
``--callback-secret-file`` or the environment variable :data:`SECRET_ENV`.

``--standby tcp://HOST:PORT`` (port 0: any free one) starts a warm buffer (issue #19): it imports
the data path, answers a control socket (``transports/control.py``) and prints where on stdout.
A ``run`` whose ``config`` is a JSON list of this command's arguments (``--input``, ``--output``,
...) is checked as the command line would be; once accepted the buffer serves it exactly as if
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
from typing import TYPE_CHECKING

from airflow_provider_lclstream.buffer.config import TRANSPORTS, BufferConfig, parse_size
from airflow_provider_lclstream.exceptions import BufferConfigError, TransportError
from airflow_provider_lclstream.protocol import buffer_host_line, emit_line
from airflow_provider_lclstream.transports import control
from airflow_provider_lclstream.transports.base import DEFAULT_MAX_MESSAGE_MB, max_message_bytes

if TYPE_CHECKING:
    from collections.abc import Sequence

SECRET_ENV = "LCLSTREAM_CALLBACK_SECRET"
EXAMPLES = f"""examples:
  lclstream-buffer --input tcp://0.0.0.0:5000 --output tcp://0.0.0.0:5001 --expect-producers 4
  {SECRET_ENV}=... lclstream-buffer --input ... --output ... --callback https://host/cb
  lclstream-buffer --input ... --output ... --callback URL --callback-secret-file ~/.cb_secret
  lclstream-buffer --standby tcp://0.0.0.0:0 --standby-timeout 600   # a warm buffer
"""
PROGRAM = "lclstream-buffer"
STANDBY_ONLY = ("--standby", "--standby-timeout")
"""Options a claimed run's arguments may not carry."""


class _Parser(argparse.ArgumentParser):
    """Raises :class:`BufferConfigError` instead of exiting (a standby checks a run's
    arguments with it and keeps waiting after a bad one)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BufferConfigError(message)


def read_secret(path: str | None) -> str | None:
    """The callback secret: the file's first line, else ``$LCLSTREAM_CALLBACK_SECRET``."""
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.readline().strip() or None
        except OSError as err:
            raise BufferConfigError(
                f"--callback-secret-file: cannot read {path} ({err.strerror})"
            ) from None
    return os.environ.get(SECRET_ENV) or None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Buffer messages between parallel producers (PUSH, dialing --input) and "
        "consumers (PULL, dialing --output), with end-of-stream accounting.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", help="URL producers dial, e.g. tcp://0.0.0.0:5000 (required)")
    p.add_argument("--output", help="URL consumers dial, e.g. tcp://0.0.0.0:5001 (required)")
    p.add_argument("--input-transport", default="zmq", help=f"one of {', '.join(TRANSPORTS)}")
    p.add_argument("--output-transport", default="zmq", help=f"one of {', '.join(TRANSPORTS)}")
    p.add_argument("--capacity-bytes", default="256MiB", help="FIFO byte cap, e.g. 32MB")
    p.add_argument("--capacity-messages", default="10000", help="FIFO message cap")
    p.add_argument("--expect-producers", type=int, help="end the stream after N producers end")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve /metrics and /stats over HTTP")
    p.add_argument("--idle-timeout", type=float, metavar="S", help="give up after S s of no input")
    p.add_argument(
        "--end-after-idle",
        type=float,
        metavar="S",
        help="for producers that send no end-of-stream record (upstream's): once data came, S s "
        "of no input end the stream; it is delivered with '\"eos\": false', exit status 3",
    )
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="S",
                   help="time to drain after a stop or the end (default 30)")  # fmt: skip
    p.add_argument("--callback", metavar="URL", help="POST psik-style state changes here")
    p.add_argument(
        "--callback-secret-file",
        metavar="PATH",
        help=f"file holding the HMAC-SHA256 key of callbacks (else ${SECRET_ENV})",
    )
    p.add_argument("--callback-secret", help=argparse.SUPPRESS)  # refused: shows in ps
    p.add_argument("--jobid", help="jobid in callbacks (default $LCLSTREAM_JOBID or buffer name)")
    p.add_argument("--persistent", action="store_true", help="serve stream after stream")
    p.add_argument("--dial-input", action="store_true", help="dial --input (stack behind a buffer)")
    p.add_argument("--dial-output", action="store_true", help="dial --output instead of listening")
    p.add_argument("--socket-queue", type=int, default=2, help="messages queued per socket pipe")
    p.add_argument(
        "--max-message-mb",
        type=float,
        default=DEFAULT_MAX_MESSAGE_MB,
        metavar="MB",
        help=f"refuse input messages over MB megabytes (10**6 bytes) before buffering them: the "
        f"connection carrying one is dropped and its producer counted as not ended; 0: no "
        f"limit (default {DEFAULT_MAX_MESSAGE_MB:g})",
    )
    p.add_argument(
        "--log-interval", type=float, default=5.0, metavar="S", help="progress log period"
    )
    p.add_argument("--report", metavar="PATH", help="write the final stats as JSON here")
    p.add_argument(
        "--standby",
        metavar="URL",
        help="a warm buffer: wait on this control socket (tcp://HOST:PORT, port 0: any free one) "
        "for one run's arguments instead of taking --input/--output here",
    )
    p.add_argument(
        "--standby-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="with --standby: exit 0 unused after S idle seconds (default 600)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _max_bytes(mb: float) -> int:
    try:
        return max_message_bytes(mb)
    except TransportError as err:
        raise BufferConfigError(f"--max-message-mb: {err}") from None


def config_from_args(args: argparse.Namespace) -> BufferConfig:
    if not args.input or not args.output:
        raise BufferConfigError("--input and --output are required (or --standby URL)")
    return BufferConfig(
        input=args.input,
        output=args.output,
        input_transport=args.input_transport,
        output_transport=args.output_transport,
        capacity_bytes=parse_size(args.capacity_bytes, "--capacity-bytes"),
        capacity_messages=parse_size(args.capacity_messages, "--capacity-messages"),
        expect_producers=args.expect_producers,
        metrics=args.metrics,
        idle_timeout_s=args.idle_timeout,
        end_after_idle_s=args.end_after_idle,
        drain_timeout_s=args.drain_timeout,
        callback=args.callback,
        callback_secret=read_secret(args.callback_secret_file),
        jobid=args.jobid,
        persistent=args.persistent,
        dial_input=args.dial_input,
        dial_output=args.dial_output,
        socket_queue=args.socket_queue,
        log_interval_s=args.log_interval,
        report=args.report,
        max_message_bytes=_max_bytes(args.max_message_mb),
    )


def run_args(text: str) -> argparse.Namespace:
    """A claimed run's arguments (a JSON list of strings), checked as :func:`main` checks its
    command line; raises :class:`BufferConfigError` naming what is wrong."""
    try:
        argv = json.loads(text)
    except ValueError as err:
        raise BufferConfigError(f"the run's arguments are not JSON: {err}") from None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise BufferConfigError("the run's arguments must be a JSON list of strings")
    taken = [a for a in argv if a.split("=", 1)[0] in STANDBY_ONLY]
    if taken:
        raise BufferConfigError(f"a run's arguments cannot carry {', '.join(taken)}")
    parser = build_parser()
    parser.__class__ = _Parser
    args = parser.parse_args(argv)
    if args.callback_secret is not None:
        raise BufferConfigError("--callback-secret: put the secret in a file")
    config_from_args(args)
    return args


def standby(args: argparse.Namespace) -> argparse.Namespace | None:
    """``--standby``: import the data path, answer the control socket, print where, and wait;
    the claimed run's arguments, or None when it ended unused (stopped, or idle)."""
    from airflow_provider_lclstream.buffer import core  # noqa: F401  (imported before a claim)

    if not args.standby.startswith("tcp://") or args.standby_timeout <= 0:
        raise BufferConfigError(
            "--standby takes tcp://HOST:PORT (port 0: any free one) and --standby-timeout a "
            "positive number of seconds"
        )
    try:
        server = control.ControlServer(args.standby, run_args, {"role": "buffer"})
    except Exception as err:  # zmq.ZMQError: the address is taken or not ours
        raise BufferConfigError(f"cannot bind --standby {args.standby}: {err}") from None
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.standby:
        if args.input or args.output:
            parser.error("--standby takes a run's --input/--output from its claim, not here")
        try:
            claimed = standby(args)
        except BufferConfigError as err:
            parser.error(str(err))
        if claimed is None:
            return 0
        args = claimed
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.callback_secret is not None:
        parser.error(
            "--callback-secret would show the secret in ps; put it in a file "
            f"(--callback-secret-file PATH) or in ${SECRET_ENV}"
        )
    try:
        config = config_from_args(args)
    except BufferConfigError as err:
        parser.error(str(err))
    from airflow_provider_lclstream.buffer.core import Buffer

    buffer = Buffer(config)  # its sockets are bound (or it raised)
    print(buffer_host_line(), flush=True)  # where it runs (``wait_buffer_placed`` reads it)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: buffer.request_stop())
    try:
        code = buffer.run()
    except TransportError as err:
        print(f"lclstream-buffer: error: {err}", file=sys.stderr)
        return 2
    if config.report:
        with open(config.report, "w") as fh:
            report = buffer.last_report
            json.dump(report.model_dump(mode="json") if report else {}, fh, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main())
