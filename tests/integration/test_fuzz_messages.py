"""Random, truncated and oversized messages into ``lclstream-receive`` and ``lclstream-buffer``
over real sockets (ZeroMQ and NNG): neither crashes, every bad message is counted, and a message
over ``--max-message-mb`` is refused before it is buffered (peak RSS stays far below its size).

Seeded (``FUZZ_SEED``) so a failure can be replayed; the counts are printed for
docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airflow_provider_lclstream.protocol import EOS_MAGIC, HDF5_SIGNATURE, EndOfStream
from airflow_provider_lclstream.streamer.serializers.hdf5 import HDF5BinarySerializer
from airflow_provider_lclstream.transports import open_sender

FUZZ_SEED = 16
BIN = Path(sys.executable).parent
OVERSIZED = 200 * 10**6  # bytes; the limit under test is 1 MB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def good_message(producer: str, seq: int) -> bytes:
    serializer = HDF5BinarySerializer({"data": "/data/data"})
    batch = {"data": np.full((2, 8, 8), seq, dtype=np.float32)}
    return bytes(serializer.serialize(batch, {"producer": producer, "seq": seq}))


def bad_messages(rng: random.Random) -> dict[str, list[bytes]]:
    """Garbage by kind: raw random bytes, HDF5-signed garbage, truncated HDF5, broken EOS."""
    valid = good_message("fuzz", 0)

    def noise(n: int) -> bytes:
        return rng.randbytes(n)

    return {
        "random": [noise(rng.choice([0, 1, 7, 100, 4096, 65536])) for _ in range(20)],
        "hdf5_signed": [HDF5_SIGNATURE + noise(rng.randint(0, 5000)) for _ in range(10)],
        "truncated_hdf5": [valid[: rng.randint(8, len(valid) - 1)] for _ in range(10)],
        "broken_eos": [
            EOS_MAGIC + b"{",
            EOS_MAGIC + noise(50),
            EOS_MAGIC + b'{"producer": 5, "rank": []}',
            EOS_MAGIC + b"[1, 2]",
            EOS_MAGIC,
        ],
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def receiver(library: str, port: int, producers: int, out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [str(BIN / "lclstream-receive"), "--url", f"tcp://127.0.0.1:{port}", "--transport",
         library, "--expect-producers", str(producers), "--timeout", "20", "--quiet",
         "--max-message-mb", "1", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_listening(port, proc)
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, json.loads(out.strip().splitlines()[-1]), err


@pytest.mark.parametrize("library", ["zmq", "nng"])
def test_receiver_counts_every_bad_message_and_keeps_going(library: str, tmp_path: Path) -> None:
    rng = random.Random(FUZZ_SEED)
    bad = bad_messages(rng)
    port = free_port()
    proc = receiver(library, port, 1, tmp_path)
    good = 5
    mixed = [good_message("p0", i) for i in range(good)] + [m for ms in bad.values() for m in ms]
    rng.shuffle(mixed)
    with open_sender(f"tcp://127.0.0.1:{port}", library, send_timeout_s=30) as sender:
        for message in mixed:
            sender.send(message)
        sender.send(EndOfStream(producer="p0", messages=good).encode())
    code, summary, err = finish(proc)
    corrupt = len(bad["hdf5_signed"]) + len(bad["truncated_hdf5"]) + len(bad["broken_eos"])
    print(f"{library}: {len(mixed) - good} bad messages, {corrupt} counted corrupt, "
          f"{summary['unattributed']} raw: {json.dumps(summary)[:300]}")  # fmt: skip
    assert "Traceback" not in err, err
    assert code == 1 and not summary["ok"] and not summary["timed_out"]
    assert len(summary["corrupt"]) == corrupt
    # raw bytes pass through (Simplon-style), named as unattributed, and never stand in for
    # a lost message of a producer that names itself
    assert summary["unattributed"] == len(bad["random"])
    assert summary["per_producer"]["p0"] == {
        "received": good, "events_received": 2 * good, "eos": True, "announced": good,
        "events": 0, "skipped": 0,
    }  # fmt: skip
    assert summary["missing_messages"] == 0 and summary["gaps"] == {}


@pytest.mark.parametrize("library", ["zmq", "nng"])
def test_oversized_message_is_refused_not_buffered(library: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = receiver(library, port, 3, tmp_path)
    baseline = peak_rss_mb(proc.pid)
    with open_sender(url, library, send_timeout_s=30) as a:
        for i in range(3):
            a.send(good_message("a", i))
        a.send(EndOfStream(producer="a", messages=3).encode())
    # b: one good message, one of 200 MB (its connection is dropped), then its record on the
    # connection the transport makes again
    b = open_sender(url, library, send_timeout_s=30, linger_s=5)
    b.send(good_message("b", 0))
    time.sleep(0.5)
    b.send(b"\x89HDF\r\n\x1a\n" + bytes(OVERSIZED))
    time.sleep(3)
    b.send(EndOfStream(producer="b", messages=2).encode())
    time.sleep(2)
    peak = peak_rss_mb(proc.pid)
    assert proc.poll() is None, proc.communicate()
    with open_sender(url, library, send_timeout_s=30) as c:
        c.send(EndOfStream(producer="c", messages=0).encode())
    b.close()
    code, summary, err = finish(proc)
    print(f"{library}: receiver peak RSS {baseline:.0f} -> {peak:.0f} MB with a "
          f"{OVERSIZED // 10**6} MB message refused; {json.dumps(summary)[:300]}")  # fmt: skip
    assert "Traceback" not in err, err
    assert peak - baseline < 50, (baseline, peak)
    assert code == 1 and not summary["ok"]
    assert summary["producers_ended"] == 3 and not summary["timed_out"]
    assert summary["gaps"] == {"b": 1} and summary["missing_messages"] == 1
    assert summary["per_producer"]["a"]["received"] == 3


def buffer_proc(library: str, inp: int, out: int, report: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [str(BIN / "lclstream-buffer"), "--input", f"tcp://127.0.0.1:{inp}", "--output",
         f"tcp://127.0.0.1:{out}", "--input-transport", library, "--output-transport", "zmq",
         "--expect-producers", "2", "--idle-timeout", "15", "--drain-timeout", "5",
         "--max-message-mb", "1", "--report", str(report), "--log-interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_listening(inp, proc)
    return proc


@pytest.mark.parametrize("library", ["zmq", "nng"])
def test_buffer_forwards_garbage_counts_broken_records_and_refuses_oversized(
    library: str, tmp_path: Path
) -> None:
    rng = random.Random(FUZZ_SEED)
    bad = bad_messages(rng)
    inp, out = free_port(), free_port()
    report = tmp_path / "report.json"
    proc = buffer_proc(library, inp, out, report)
    consumer = subprocess.Popen(
        [str(BIN / "lclstream-receive"), "--url", f"tcp://127.0.0.1:{out}", "--dial",
         "--expect-producers", "1", "--timeout", "30", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    baseline = peak_rss_mb(proc.pid)
    url = f"tcp://127.0.0.1:{inp}"
    data = [m for kind in ("random", "hdf5_signed", "truncated_hdf5") for m in bad[kind]]
    with open_sender(url, library, send_timeout_s=30) as a:
        for message in data:
            a.send(message)
        for record in bad["broken_eos"]:
            a.send(record)
        a.send(EndOfStream(producer="a", messages=len(data)).encode())
    # b sends 200 MB: refused, its connection dropped; it never ends its stream
    b = open_sender(url, library, send_timeout_s=30, linger_s=0)
    b.send(bytes(OVERSIZED))
    time.sleep(2)
    peak = peak_rss_mb(proc.pid)
    b.close()
    _, err = proc.communicate(timeout=60)
    consumer_out, _ = consumer.communicate(timeout=60)
    stats = json.loads(report.read_text())
    print(f"{library}: buffer peak RSS {baseline:.0f} -> {peak:.0f} MB; exit {proc.returncode}; "
          f"corrupt_eos {stats['corrupt_eos']}; problems {stats['problems']}")  # fmt: skip
    assert "Traceback" not in err, err[-3000:]
    assert peak - baseline < 50, (baseline, peak)
    assert stats["corrupt_eos"] == len(bad["broken_eos"])
    assert stats["messages_in"] == len(data)  # the buffer forwards what it cannot judge
    assert proc.returncode == 1  # producer b never ended: the stream is incomplete
    assert stats["state"] == "failed" and stats["problems"], stats
    delivered = json.loads(consumer_out.strip().splitlines()[-1])
    assert delivered["messages"] + len(delivered["corrupt"]) == len(data)
