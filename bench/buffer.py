"""The buffer against the floor of a forwarding hop, in one run on this machine.

Every case is 2 producers -> hop -> 2 consumers, each party its own process, all on this host:

- ``direct``: no hop; each producer's PUSH dials both consumers' PULL sockets.
- ``forwarder``: the cheapest store-and-forward hop there is. For ZeroMQ, libzmq's own C
  forwarder (``zmq.proxy`` between a PULL and a PUSH socket, no Python in the loop); for NNG,
  a pynng loop (``recv_msg`` / ``send_msg``, no copy in Python).
- ``buffer``: ``lclstream-buffer`` (``--expect-producers 2``), same transport on both sides.

Producers and consumers are raw pyzmq/pynng sockets (no framework) so that the hop is the only
thing that differs. A case's throughput is the bytes the consumers got over the time from the
first message any consumer saw to the last. Each case runs ``--rounds`` rounds, and each round
runs the three hops back to back; the table shows each hop's medians, and every ratio is the
median over rounds of the buffer's figure over the other hop's in the same round, so that a
drift in the machine's speed (often 10-30 % within minutes here) hits both sides of a ratio.
The hop's cost is its CPU seconds (user + system, from ``psutil``, sampled every 20 ms)
per GB, counted over that same span: what moving data costs. The buffer's fixed costs per stream
are printed apart (``fixed CPU s``: the CPU outside the span, mostly its end-of-stream fan-out,
which encodes an HDF5 record per consumer and round); its start-up (Python imports) is before
the clock: the bench waits until it logs that it listens.

Ends with one line of ``key=value`` headline figures:
``ratio`` (buffer / forwarder, ZeroMQ, 1 MiB), ``nng_ratio`` (buffer / pynng loop, NNG, 1 MiB),
``big_ratio`` (buffer / forwarder, ZeroMQ, 40 MB), ``direct_ratio`` (buffer / direct, ZeroMQ,
1 MiB), ``gbps`` (the buffer's GB/s, ZeroMQ, 1 MiB) and ``cpu_ratio`` (the buffer's CPU seconds
per GB / the forwarder's, ZeroMQ, 1 MiB), ``nng_cpu_ratio`` (NNG, 1 MiB) and ``big_cpu_ratio``
(ZeroMQ, 40 MB).

Examples::

    python bench/buffer.py                # every case, 5 rounds (~8 min on 2 cores)
    python bench/buffer.py --rounds 1 --gb 1   # a quick look
    python bench/buffer.py --buffer-args "--socket-queue 16"   # a buffer setting tried
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve()
MIB = 1 << 20
QUEUE_BYTES = 64 * MIB
"""Bytes a socket may queue (HWM = this / message size): bounds memory at 40 MB messages."""
BUFFER_ARGS: list[str] = []
"""Extra ``lclstream-buffer`` arguments (``--buffer-args``)."""
IDLE_END_S = 1.5
"""A consumer stops once data came and nothing more arrived for this long."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hwm(size: int) -> int:
    return max(2, QUEUE_BYTES // size)


# ---------------------------------------------------------------- roles (run as subprocesses)
def role_producer(library: str, urls: list[str], messages: int, size: int) -> None:
    from airflow_provider_lclstream.protocol import EndOfStream

    payload = os.urandom(size)
    eos = EndOfStream(producer=f"bench{os.getpid()}", rank=0, messages=messages).encode()
    if library == "zmq":
        import zmq

        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, hwm(size))
        push.setsockopt(zmq.LINGER, 60_000)
        for url in urls:
            push.connect(url)
        frame = zmq.Frame(payload)
        for _ in range(messages):
            push.send(frame, copy=False)
        push.send(eos)  # the buffer ends its stream on these; consumers skip short messages
        push.close()
        ctx.term()
        return
    import pynng

    nng_push = pynng.Push0(send_buffer_size=hwm(size))
    for url in urls:
        nng_push.dial(url, block=True)
    for _ in range(messages):
        nng_push.send(payload)
    nng_push.send(eos)
    time.sleep(1.0)  # NNG has no linger: let the pipes drain before closing
    nng_push.close()


def role_consumer(library: str, url: str, bind: bool, size: int, timeout_s: float) -> None:
    from airflow_provider_lclstream.protocol import is_end_of_stream

    got = {"bytes": 0, "messages": 0, "first": 0.0, "last": 0.0}
    deadline = time.time() + timeout_s
    if library == "zmq":
        import zmq

        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, hwm(size))
        pull.bind(url) if bind else pull.connect(url)
        print("ready", flush=True)

        def recv() -> int | None:
            if not pull.poll(int(IDLE_END_S * 1000)):
                return None
            view = pull.recv(copy=False).buffer
            return -1 if is_end_of_stream(view) else len(view)

    else:
        import pynng

        nng_pull = pynng.Pull0(recv_max_size=0, recv_buffer_size=hwm(size))
        nng_pull.recv_timeout = int(IDLE_END_S * 1000)
        nng_pull.listen(url) if bind else nng_pull.dial(url, block=False)
        print("ready", flush=True)

        def recv() -> int | None:
            try:
                body = nng_pull.recv_msg().bytes
                return -1 if is_end_of_stream(body) else len(body)
            except pynng.Timeout:
                return None

    while time.time() < deadline:
        n = recv()
        if n is None:
            if got["messages"]:
                break
            continue
        if n < 0:  # end-of-stream records (the producers', or the buffer's own)
            continue
        now = time.time()
        got["first"] = got["first"] or now
        got["last"] = now
        got["bytes"] += n
        got["messages"] += 1
    print(json.dumps(got), flush=True)


def role_forwarder(library: str, front: str, back: str, size: int) -> None:
    if library == "zmq":
        import zmq

        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        push = ctx.socket(zmq.PUSH)
        pull.setsockopt(zmq.RCVHWM, hwm(size))
        push.setsockopt(zmq.SNDHWM, hwm(size))
        pull.bind(front)
        push.bind(back)
        print("ready", flush=True)
        zmq.proxy(pull, push)  # libzmq's C loop; runs until the process is killed
        return
    import pynng

    nng_pull = pynng.Pull0(recv_max_size=0, recv_buffer_size=hwm(size))
    nng_push = pynng.Push0(send_buffer_size=hwm(size))
    nng_pull.listen(front)
    nng_push.listen(back)
    print("ready", flush=True)
    while True:
        nng_push.send_msg(nng_pull.recv_msg())


# ---------------------------------------------------------------- the driver
@dataclass
class Result:
    gbps: float
    cpu_s_per_gb: float | None
    complete: bool
    fixed_cpu_s: float | None = None
    """The hop's CPU seconds outside the data span (settling, end-of-stream fan-out)."""


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE), "--role", *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"{what} did not start (said {line!r})")


def _wait_listening(
    proc: subprocess.Popen[str], log_file: IO[str], timeout_s: float = 60.0
) -> None:
    """Until the buffer logs that it listens: its start-up (Python imports, about a CPU second
    or more here) must not count as CPU spent moving data, nor compete with the stream."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log_file.seek(0)
        if "input listens on" in log_file.read():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    log_file.seek(0)
    raise RuntimeError(f"lclstream-buffer did not start listening: {log_file.read()[-2000:]}")


def _hop_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


class CpuSampler:
    """The hop's CPU seconds every ``interval_s`` (wall clock ``time.time()``, the clock of
    the consumers' first/last stamps), so that the CPU spent while data moved can be read off
    between the first and the last message: a per-GB cost without the hop's fixed costs per
    stream (the buffer's end-of-stream fan-out after the data), which are reported apart."""

    def __init__(self, proc: psutil.Process, interval_s: float = 0.02) -> None:
        self.proc = proc
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), _hop_cpu(self.proc)))
            except psutil.Error:  # the hop exited
                return
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, when: float) -> float:
        """CPU seconds at ``when``, interpolated between the samples around it."""
        before = [s for s in self.samples if s[0] <= when]
        after = [s for s in self.samples if s[0] >= when]
        if not before or not after:
            raise RuntimeError("the CPU samples do not cover the data span")
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 if t1 == t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)


def run_case(library: str, hop: str, size: int, total_bytes: int) -> Result:
    """One round of one case; returns GB/s, the hop's CPU s/GB, and whether all bytes came."""
    per_producer = max(1, total_bytes // (2 * size))
    expected = 2 * per_producer * size
    timeout = 120.0
    hop_proc: subprocess.Popen[str] | None = None
    log_file: IO[str] | None = None
    if hop == "direct":
        consumer_urls = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
        consumers = [_spawn("consumer", library, u, "bind", str(size)) for u in consumer_urls]
        producer_urls = consumer_urls
    else:
        front, back = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
        if hop == "forwarder":
            hop_proc = _spawn("forwarder", library, front, back, str(size))
            _wait_ready(hop_proc, f"{library} forwarder")
        else:
            log_file = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed at the end
            hop_proc = subprocess.Popen(
                [
                    str(BIN / "lclstream-buffer"),
                    *("--input", front, "--output", back),
                    *("--input-transport", library, "--output-transport", library),
                    *("--expect-producers", "2", "--drain-timeout", "5"),
                    *("--log-interval", "600", "--max-message-mb", "0"),
                    *BUFFER_ARGS,
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                text=True,
            )
            _wait_listening(hop_proc, log_file)
        consumers = [_spawn("consumer", library, back, "dial", str(size)) for _ in range(2)]
        producer_urls = [front]
    for c in consumers:
        _wait_ready(c, "consumer")
    time.sleep(0.3)  # let the consumers' connections settle so both get data
    hop_ps = psutil.Process(hop_proc.pid) if hop_proc is not None else None
    cpu0 = _hop_cpu(hop_ps) if hop_ps is not None else 0.0
    sampler = CpuSampler(hop_ps) if hop_ps is not None else None
    producers = [
        _spawn("producer", library, ",".join(producer_urls), str(per_producer), str(size))
        for _ in range(2)
    ]
    reports = []
    for c in consumers:
        out, _ = c.communicate(timeout=timeout + 30)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    cpu_all = (_hop_cpu(hop_ps) - cpu0) if hop_ps is not None else None
    if sampler is not None:
        sampler.stop()
    for p in producers:
        p.wait(timeout=30)
    if hop_proc is not None:
        hop_proc.terminate()
        try:
            hop_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            hop_proc.kill()
            hop_proc.wait()
    if log_file is not None:
        log_file.close()
    got = sum(r["bytes"] for r in reports)
    firsts = [r["first"] for r in reports if r["messages"]]
    lasts = [r["last"] for r in reports if r["messages"]]
    span = max(lasts) - min(firsts) if firsts else float("inf")
    gb = got / 1e9
    cpu_s = fixed_s = None
    if sampler is not None and cpu_all is not None and firsts:
        cpu_s = sampler.at(max(lasts)) - sampler.at(min(firsts))
        fixed_s = cpu_all - cpu_s
    return Result(
        gbps=gb / span if span > 0 else 0.0,
        cpu_s_per_gb=(cpu_s / gb) if cpu_s is not None and gb else None,
        complete=got == expected,
        fixed_cpu_s=fixed_s,
    )


def median_result(results: list[Result]) -> Result:
    cpus = [r.cpu_s_per_gb for r in results if r.cpu_s_per_gb is not None]
    fixed = [r.fixed_cpu_s for r in results if r.fixed_cpu_s is not None]
    return Result(
        gbps=statistics.median(r.gbps for r in results),
        cpu_s_per_gb=statistics.median(cpus) if cpus else None,
        complete=all(r.complete for r in results),
        fixed_cpu_s=statistics.median(fixed) if fixed else None,
    )


def paired_ratio(buf: list[Result], other: list[Result], cpu: bool = False) -> float:
    """The median over rounds of the buffer's figure over the other hop's in the same round
    (the hops of a round run back to back, so a drift of the machine's speed cancels)."""
    ratios = []
    for b, o in zip(buf, other, strict=True):
        if cpu:
            if b.cpu_s_per_gb is not None and o.cpu_s_per_gb:
                ratios.append(b.cpu_s_per_gb / o.cpu_s_per_gb)
        elif o.gbps:
            ratios.append(b.gbps / o.gbps)
    return statistics.median(ratios) if ratios else float("nan")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--role"]:
        role, library, *rest = argv[1:]
        if role == "producer":
            role_producer(library, rest[0].split(","), int(rest[1]), int(rest[2]))
        elif role == "consumer":
            role_consumer(library, rest[0], rest[1] == "bind", int(rest[2]), 150.0)
        else:
            role_forwarder(library, rest[0], rest[1], int(rest[2]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python bench/buffer.py\n  python bench/buffer.py --rounds 1 --gb 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds per case, the hops interleaved (default 5)"
    )
    parser.add_argument("--gb", type=float, default=3.0, help="GB moved per round (default 3)")
    parser.add_argument(
        "--buffer-args", default="", metavar="ARGS",
        help="extra lclstream-buffer arguments, e.g. \"--socket-queue 16\"",
    )  # fmt: skip
    args = parser.parse_args(argv)
    BUFFER_ARGS[:] = shlex.split(args.buffer_args)
    if args.rounds < 1 or args.gb <= 0:
        parser.error("--rounds must be >= 1 and --gb > 0")
    total = int(args.gb * 1e9)
    cases = [
        ("zmq", MIB, "1 MiB"),
        ("zmq", 40_000_000, "40 MB"),
        ("nng", MIB, "1 MiB"),
        ("nng", 40_000_000, "40 MB"),
    ]
    table: dict[tuple[str, int, str], Result] = {}
    rounds: dict[tuple[str, int, str], list[Result]] = {}
    hops = ("direct", "forwarder", "buffer")
    print(
        f"{'transport':9} {'size':>6} {'hop':>9} {'GB/s':>6} {'hop CPU s/GB':>12} "
        f"{'fixed CPU s':>11}  complete"
    )
    for library, size, label in cases:
        for _ in range(args.rounds):  # the hops interleaved, round by round
            for hop in hops:
                rounds.setdefault((library, size, hop), []).append(
                    run_case(library, hop, size, total)
                )
        for hop in hops:
            r = table[library, size, hop] = median_result(rounds[library, size, hop])
            cpu = f"{r.cpu_s_per_gb:.3f}" if r.cpu_s_per_gb is not None else "-"
            fixed = f"{r.fixed_cpu_s:.2f}" if r.fixed_cpu_s is not None else "-"
            print(
                f"{library:9} {label:>6} {hop:>9} {r.gbps:6.2f} {cpu:>12} {fixed:>11}  {r.complete}"
            )
    if not all(r.complete for r in table.values()):
        print("bench/buffer.py: some case lost data (see 'complete')", file=sys.stderr)
        return 1

    def ratio(library: str, size: int, against: str) -> float:
        return paired_ratio(rounds[library, size, "buffer"], rounds[library, size, against])

    def cpu_ratio(library: str, size: int) -> float:
        buf, fwd = rounds[library, size, "buffer"], rounds[library, size, "forwarder"]
        return paired_ratio(buf, fwd, cpu=True)

    buf = table["zmq", MIB, "buffer"]
    print(
        f"ratio={ratio('zmq', MIB, 'forwarder'):.2f} "
        f"nng_ratio={ratio('nng', MIB, 'forwarder'):.2f} "
        f"big_ratio={ratio('zmq', 40_000_000, 'forwarder'):.2f} "
        f"direct_ratio={ratio('zmq', MIB, 'direct'):.2f} "
        f"gbps={buf.gbps:.2f} cpu_ratio={cpu_ratio('zmq', MIB):.2f} "
        f"nng_cpu_ratio={cpu_ratio('nng', MIB):.2f} "
        f"big_cpu_ratio={cpu_ratio('zmq', 40_000_000):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
