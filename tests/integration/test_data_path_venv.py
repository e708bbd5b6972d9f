"""The data path installs and streams in a venv without Airflow (``make data-path-venv``).

Builds a fresh venv with plain ``pip`` (from the package registry, as a consumer site would),
checks that Airflow is not in it, then runs a real 2-rank ``mpiexec lclstreamer`` stream into
``lclstream-receive``, both from that venv.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.streaming import free_port, total_line, write_config

pytestmark = pytest.mark.mpi

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_path_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    venv = tmp_path_factory.mktemp("datapath") / "venv"
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "data-path-venv", f"DIR={venv}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


def test_no_airflow_in_the_data_path_venv(data_path_venv: Path) -> None:
    listed = subprocess.run(
        [str(data_path_venv / "bin" / "pip"), "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "airflow-provider-lclstream" in names
    assert {"mpich", "mpi4py", "h5py", "pyzmq", "pynng"} <= names
    assert not {n for n in names if n.startswith("apache-airflow")}, names
    # The data path's modules import nothing of Airflow, even transitively.
    probe = (
        "import sys\n"
        "import airflow_provider_lclstream.streamer.cli, airflow_provider_lclstream.buffer.cli\n"
        "import airflow_provider_lclstream.consumer.cli, airflow_provider_lclstream.consumer\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    out = subprocess.run(
        [str(data_path_venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_two_rank_stream_in_the_data_path_venv(data_path_venv: Path, tmp_path: Path) -> None:
    bin_dir = data_path_venv / "bin"
    url = f"tcp://127.0.0.1:{free_port()}"
    receiver = subprocess.Popen(
        [
            str(bin_dir / "lclstream-receive"),
            "--url",
            url,
            "--expect-producers",
            "2",
            "--out",
            str(tmp_path / "out"),
            "--timeout",
            "60",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    config = write_config(
        tmp_path / "c.yaml",
        {
            "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": 17},
            "data_sources": {"detector_data": {"type": "SyntheticDetector", "shape": [2, 32, 32]}},
            "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 4},
            "data_serializer": {
                "type": "HDF5BinarySerializer",
                "fields": {"detector_data": "/data/data"},
                "compression": "bitshuffle_with_lz4",
            },
            "data_handlers": [
                {"type": "BinaryDataStreamingDataHandler", "urls": [url], "role": "client"}
            ],
        },
    )
    try:
        streamer = subprocess.run(
            [str(bin_dir / "mpiexec"), "-n", "2", str(bin_dir / "lclstreamer"), "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert streamer.returncode == 0, streamer.stderr
        out, err = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
    assert receiver.returncode == 0, err
    total = total_line(streamer.stdout)
    assert total["per_rank_events"] == [17, 17]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["events"] == 34
    assert summary["files"] == total["messages"] == 10  # 5 batches (4,4,4,4,1) per rank
    assert len(list((tmp_path / "out").glob("*.h5"))) == 10
