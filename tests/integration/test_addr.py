"""``addr`` end to end: a request with the user's own receiver address. The transfer's real jobs
run here: the buffer (its output dialing ``addr``), the 4-rank psana2 streamer in parallel smd
mode, and the user's ``lclstream-receive --bind`` at ``addr``; no consumer job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.transfer.jobs import BufferEndpoints, buffer_job, streamer_job
from tests.integration.streaming import free_port
from tests.psana_data import write_run

pytestmark = [pytest.mark.mpi, pytest.mark.psana]
BIN = Path(sys.executable).parent


def test_the_buffer_pushes_to_the_users_receiver_at_addr(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "xtc", "xpptut15", 50, streams=2, events=24)
    addr = f"tcp://127.0.0.1:{free_port()}"
    request = TransferRequest.model_validate(
        {"exp": "xpptut15", "run": 50, "access_mode": "smd", "detector_name": "xppcspad",
         "mode": "raw", "addr": addr, "img_per_file": 5, "psana": 2, "ranks": 4,
         "xtc_dir": str(run_dir)}
    )  # fmt: skip
    endpoints = BufferEndpoints.pick()
    out = tmp_path / "received"
    receiver = subprocess.Popen(
        [str(BIN / "lclstream-receive"), "--url", addr, "--bind", "--expect-producers", "1",
         "--out", str(out), "--timeout", "150", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    buffer_script = buffer_job(request, endpoints, bin_dir=str(BIN)).script
    buffer = subprocess.Popen(
        ["bash", "-c", buffer_script], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    config = request.to_streamer_config(endpoints.input_url)
    spec = streamer_job(request, config, bin_dir=str(BIN))
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "LCLSTREAM_LOGBOOK_URL": f"http://127.0.0.1:{free_port()}",
    }
    try:
        streamer = subprocess.run(
            ["bash", "-c", spec.script], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=180,
        )  # fmt: skip
        assert streamer.returncode == 0, streamer.stderr[-3000:]
        received, errors = receiver.communicate(timeout=150)
        assert receiver.returncode == 0, errors[-3000:]
    finally:
        for process in (receiver, buffer):
            if process.poll() is None:
                process.terminate()
                process.wait(30)
    summary = json.loads(received.strip().splitlines()[-1])
    assert summary["ok"] and summary["files"] == summary["messages"] > 0, summary
    timestamps = []
    for path in sorted(out.glob("*.h5")):
        with h5py.File(path) as f:
            timestamps.extend(int(t) for t in f["/data/timestamp"][()].reshape(-1))
            assert f["/data/data"].shape[0] == f["/data/timestamp"].shape[0]
    assert len(timestamps) == len(set(timestamps)) == 24  # every event, exactly once
    total = next(json.loads(line[6:]) for line in streamer.stdout.splitlines()
                 if line.startswith("TOTAL "))  # fmt: skip
    assert total["events"] == 24
