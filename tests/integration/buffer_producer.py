"""A stand-in LCLStreamer rank for the buffer tests: N tagged messages, then its EndOfStream.

    mpiexec -n 2 python tests/integration/buffer_producer.py URL N [--transport zmq|nng]
        [--size BYTES] [--no-eos] [--hang]

Each payload starts with ``RANK:INDEX:`` and is padded to ``--size`` bytes. Without mpi4py the
rank comes from ``--rank``. ``--no-eos --hang`` makes a producer that stops mid-stream and waits
to be killed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from airflow_provider_lclstream.protocol import EndOfStream, producer_name  # noqa: E402
from airflow_provider_lclstream.transports import open_sender  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("n", type=int)
    p.add_argument("--transport", default="zmq")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--rank", type=int)
    p.add_argument("--no-eos", action="store_true")
    p.add_argument("--hang", action="store_true")
    args = p.parse_args()
    rank = args.rank
    if rank is None:
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
    sender = open_sender(args.url, args.transport, send_timeout_s=60, linger_s=30)
    total = 0
    for i in range(args.n):
        head = f"{rank}:{i}:".encode()
        payload = head + b"x" * max(0, args.size - len(head))
        sender.send(payload)
        total += len(payload)
    if not args.no_eos:
        eos = EndOfStream(producer=producer_name(rank), rank=rank, messages=args.n, bytes=total)
        sender.send(eos.encode())
    print(f"rank {rank} sent {args.n} messages", flush=True)
    while args.hang:
        time.sleep(1)
    sender.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
