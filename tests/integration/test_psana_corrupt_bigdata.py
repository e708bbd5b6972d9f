"""A corrupt big-data dgram in psana2's parallel smd mode, streamed to a real receiver.

psana dies in C on the big-data rank that reads it, and MPI kills the others, mostly before
they can print a summary. The streamer job's fallback (``transfer/jobs.py``), which always
runs after the failed ``mpiexec``, names the file and offset (``streamer/xtc2.py``) and prints
each rank's tally (``streamer/tally.py``: a killed rank's count runs to the last event it
read); the receiver counts what arrived per producer, and ``lost_buffer_accounting`` turns both
into produced against delivered: exact, the events after the corrupt dgram were never read.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import h5py
import pytest

from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.streamer.xtc2 import CONFIGURE, scan
from airflow_provider_lclstream.transfer.jobs import streamer_job
from airflow_provider_lclstream.transfer.report import accounting_line, lost_buffer_accounting
from tests.integration.streaming import BIN, free_port
from tests.psana_data import write_run

pytestmark = [pytest.mark.mpi, pytest.mark.psana]
RANKS = 4  # smd0, an event builder, two big-data ranks


def file_events(directory: Path) -> int:
    total = 0
    for path in sorted(directory.glob("*.h5")):
        with h5py.File(path) as f:
            total += f["data/data"].shape[0]
    return total


def test_a_corrupt_bigdata_dgram_is_named_and_what_arrived_is_accounted(tmp_path: Path) -> None:
    run = write_run(tmp_path / "xtc", "xpptut15", 46, streams=1, events=40)
    big = run / "xpptut15-r0046-s000-c000.xtc2"
    data = bytearray(big.read_bytes())
    dgrams = scan(big, bytes(data))
    l1 = [d for d in dgrams if d.is_l1]
    bad = l1[len(l1) // 2]  # an event in the middle of the file, well after Configure
    assert dgrams[0].service == CONFIGURE and bad.offset > dgrams[0].size
    data[bad.offset + 20 : bad.offset + 24] = (10**9).to_bytes(4, "little")  # its extent
    big.write_bytes(bytes(data))

    url = f"tcp://127.0.0.1:{free_port()}"
    received = tmp_path / "received"
    receiver = subprocess.Popen(
        [str(BIN / "lclstream-receive"), "--url", url, "--bind", "--out", str(received),
         "--expect-producers", str(RANKS), "--timeout", "6", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        request = TransferRequest.model_validate(
            {"exp": "xpptut15", "run": 46, "xtc_dir": str(run), "psana": 2, "ranks": RANKS,
             "detector_name": "xppcspad", "img_per_file": 2}
        )  # fmt: skip
        spec = streamer_job(request, request.to_streamer_config(url), bin_dir=str(BIN))
        env = {"PATH": f"{BIN}:/usr/bin:/bin", "LCLSTREAM_PSANA_OFFLINE": "1"}
        job = subprocess.run(["bash", "-c", spec.script], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        receiver_out, receiver_err = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    print(job.stdout[-3000:], job.stderr[-3000:], receiver_out, receiver_err, sep="\n")

    # the failure names the big-data file and the corrupt dgram's exact offset
    assert job.returncode != 0
    assert f"xtc2: {big}: corrupt dgram at byte offset {bad.offset} " in job.stderr

    # the receiver: what arrived, counted per producer; a dead rank sent no end-of-stream record
    summary = json.loads(receiver_out.splitlines()[-1])
    assert receiver.returncode == 1 and not summary["ok"] and not summary["eos"]
    delivered = file_events(received)
    assert summary["events"] == summary["events_delivered"] == delivered
    per_producer = summary["per_producer"]
    assert sum(p["events_received"] for p in per_producer.values()) == delivered
    for name, counts in per_producer.items():
        if not counts["eos"]:
            assert f"producer {name}: {counts['received']} messages, " in receiver_err
            assert f"{counts['events_received']} events received, no end-of-stream" in (
                receiver_err
            )

    # the streamer's side: every rank has a count (its summary or its tally), the dead ones'
    # counted to the last event they read, so the accounting is exact
    accounting = lost_buffer_accounting(RANKS, job.stdout, {"receiver": receiver_out})
    line = accounting_line(accounting)
    print(line)
    assert accounting["ok"] is False and accounting["exact"] is True, accounting
    assert accounting["ranks_without_summary"] == [], accounting  # each rank left a tally
    killed = [json.loads(x) for x in job.stdout.splitlines() if '"killed": true' in x]
    assert killed, job.stdout  # psana's rank died in C: its count came from its tally
    assert accounting["delivered"] == delivered
    assert accounting["produced"] >= delivered, accounting
    assert accounting["missing"] == accounting["produced"] - delivered
    assert line == f"{accounting['produced']} events produced, {delivered} delivered, " + (
        f"{accounting['missing']} missing"
    )
    assert f"; {accounting['produced']} events produced" in job.stderr, job.stderr
