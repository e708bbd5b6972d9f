"""Consumers and helpers for the buffer tests; also a consumer script for kill tests.

    python tests/integration/buffer_consumer.py URL OUTFILE [--transport zmq|nng] [--delay S]

The script dials URL, appends each message's ``RANK:INDEX`` tag to OUTFILE (flushed per line)
and, on the buffer's end-of-stream record, writes ``EOS <json>`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from airflow_provider_lclstream.protocol import EndOfStream, is_end_of_stream  # noqa: E402
from airflow_provider_lclstream.transports import open_receiver  # noqa: E402

PRODUCER = str(REPO / "tests" / "integration" / "buffer_producer.py")
CONSUMER = str(Path(__file__).resolve())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def url() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def tag(message: bytes) -> tuple[int, int]:
    rank, index, _ = message.split(b":", 2)
    return int(rank), int(index)


def get_stats(port: int) -> dict:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()


def wait_consumers(port: int, count: int, timeout_s: float = 15.0) -> dict:
    """Poll the buffer's ``/stats`` until ``count`` consumers are connected."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stats = get_stats(port)
            if stats["consumers"]["connected"] >= count:
                return stats
        except OSError:
            pass  # not listening yet
        except Exception as err:  # noqa: BLE001 - httpx errors while the buffer starts
            if "connect" not in type(err).__name__.lower():
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} consumers did not connect within {timeout_s} s")
        time.sleep(0.05)


def start_buffer(log: Path, *args: str) -> subprocess.Popen:
    """The CLI as a subprocess, logging to ``log`` (a pipe could fill up and stall it)."""
    cmd = [sys.executable, "-m", "airflow_provider_lclstream.buffer.cli", "--log-interval", "1"]
    return subprocess.Popen([*cmd, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO)


def start_producer(target: str, n: int, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, PRODUCER, target, str(n), *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL)


class Consumer(threading.Thread):
    """Dial ``target`` and collect tags until the buffer's EOS (or ``timeout_s`` of silence)."""

    def __init__(self, target: str, library: str = "zmq", delay_s: float = 0.0,
                 timeout_s: float = 30.0, raw: bool = False) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.target, self.library, self.delay_s, self.timeout_s = (
            target,
            library,
            delay_s,
            timeout_s,
        )
        self.raw = raw
        self.tags: list[tuple[int, int]] = []
        self.sizes = 0
        self.eos: EndOfStream | None = None
        self.error: Exception | None = None
        self.start()

    def _recv_fn(self):  # noqa: ANN202
        if not self.raw:
            receiver = open_receiver(self.target, self.library, bind=False)
            return receiver.recv, receiver.close
        if self.library == "nng":  # plain upstream pynng, no project code
            import pynng

            sock = pynng.Pull0(recv_max_size=0, recv_timeout=int(self.timeout_s * 1000))
            sock.dial(self.target, block=False)

            def recv_nng(_timeout: float) -> bytes | None:
                try:
                    return sock.recv()
                except pynng.Timeout:
                    return None

            return recv_nng, sock.close
        import zmq

        zsock = zmq.Context.instance().socket(zmq.PULL)
        zsock.connect(self.target)

        def recv_zmq(timeout: float) -> bytes | None:
            return zsock.recv() if zsock.poll(int(timeout * 1000)) else None

        return recv_zmq, lambda: zsock.close(0)

    def run(self) -> None:
        recv, close = self._recv_fn()
        try:
            self._loop(recv)
        except Exception as err:  # noqa: BLE001 - closed under us when a test gives up
            self.error = err
        finally:
            close()

    def _loop(self, recv) -> None:  # noqa: ANN001
        while (message := recv(self.timeout_s)) is not None:
            if is_end_of_stream(message):
                self.eos = EndOfStream.decode(message)
                return
            self.tags.append(tag(message))
            self.sizes += len(message)
            if self.delay_s:
                time.sleep(self.delay_s)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--transport", default="zmq")
    p.add_argument("--delay", type=float, default=0.0)
    args = p.parse_args()
    receiver = open_receiver(args.url, args.transport, bind=False)
    with open(args.out, "w") as out:
        while (message := receiver.recv(60)) is not None:
            if is_end_of_stream(message):
                out.write("EOS " + json.dumps(EndOfStream.decode(message).extra) + "\n")
                break
            rank, index = tag(message)
            out.write(f"{rank}:{index}\n")
            out.flush()
            if args.delay:
                time.sleep(args.delay)
    receiver.close()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
