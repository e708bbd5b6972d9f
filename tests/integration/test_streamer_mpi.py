"""Real ``mpiexec -n 2 lclstreamer`` runs to a receiver: both transports, both roles, psana2."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.integration.streaming import (
    BIN,
    BackgroundReceiver,
    free_port,
    run_streamer,
    total_line,
    write_config,
)

pytestmark = pytest.mark.mpi


def synthetic_config(url: str, library: str, role: str, events: int = 23) -> dict:
    return {
        "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": events},
        "data_sources": {
            "detector_data": {"type": "SyntheticDetector", "shape": [2, 64, 64]},
            "pulse": {"type": "ConstValue", "value": 1.5, "dtype": "float32"},
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 5},
        "data_serializer": {
            "type": "HDF5BinarySerializer",
            "fields": {"detector_data": "/data/data", "pulse": "/pulse"},
            "compression": "bitshuffle_with_lz4",
        },
        "data_handlers": [
            {
                "type": "BinaryDataStreamingDataHandler",
                "urls": [url],
                "library": library,
                "role": role,
            }
        ],
    }


@pytest.mark.parametrize("library", ["zmq", "nng"])
def test_two_ranks_to_receiver_client_role(mpiexec: str, tmp_path: Path, library: str) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    receiver = BackgroundReceiver(url, library, bind=True, producers=2)
    config = write_config(tmp_path / "c.yaml", synthetic_config(url, library, "client"))
    result = run_streamer(mpiexec, 2, config)
    assert result.returncode == 0, result.stderr
    report = receiver.join()
    total = total_line(result.stdout)
    assert total["events"] == 46 and total["per_rank_events"] == [23, 23]
    assert report.ok, report.summary()
    assert sum(receiver.events_per_message) == 46  # exactly the producers' counts
    assert report.messages == total["messages"] == 10  # 5 batches of 5,5,5,5,3 per rank
    assert sorted(e.events for e in report.ended) == [23, 23]


@pytest.mark.parametrize("library", ["zmq", "nng"])
def test_server_role_ranks_listen_and_receiver_dials(
    mpiexec: str, tmp_path: Path, library: str
) -> None:
    urls = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    config = synthetic_config(urls[0], library, "server", events=12)
    config["data_handlers"][0].update(urls=urls, distribute=True)
    path = write_config(tmp_path / "c.yaml", config)
    proc = subprocess.Popen(
        [mpiexec, "-n", "2", str(BIN / "lclstreamer"), "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)  # let the ranks listen; dialing also retries
    reports = [BackgroundReceiver(url, library, bind=False, producers=1) for url in urls]
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    for background in reports:
        report = background.join()
        assert report.ok, report.summary()
        assert sum(background.events_per_message) == 12


def test_unreachable_receiver_fails_with_clear_error(mpiexec: str, tmp_path: Path) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "c.yaml", synthetic_config(url, "zmq", "client"))
    result = run_streamer(mpiexec, 2, config, "--send-timeout", "1")
    assert result.returncode != 0
    assert "no receiver took data on " + url in result.stderr


def test_bad_config_is_reported_without_traceback(tmp_path: Path) -> None:
    config = synthetic_config("tcp://127.0.0.1:1", "carrier-pigeon", "client")
    path = write_config(tmp_path / "c.yaml", config)
    result = subprocess.run([BIN / "lclstreamer", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "data_handlers[0].library" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.psana
def test_psana2_xtc2_two_ranks(mpiexec: str, tmp_path: Path, xtc2_file: Path) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    config = {
        "source_identifier": f"files={xtc2_file}",
        "skip_incomplete_events": True,
        "event_source": {"type": "Psana2EventSource", "calibration": "skip"},
        "data_sources": {
            "timestamp": {"type": "Psana2Timestamp"},
            "detector_data": {
                "type": "Psana2DetectorInterface",
                "psana_name": "xppcspad",
                "psana_fields": "raw.raw",
            },
            "image": {"type": "Psana2AssembledAreaDetector", "psana_name": "xppcspad"},
            "run_info": {"type": "Psana2RunInfo"},
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 2},
        "data_serializer": {
            "type": "HDF5BinarySerializer",
            "fields": {"timestamp": "/timestamp", "detector_data": "/data", "image": "/image"},
        },
        "data_handlers": [
            {"type": "BinaryDataStreamingDataHandler", "urls": [url], "library": "zmq"}
        ],
    }
    receiver = BackgroundReceiver(url, "zmq", bind=True, producers=2)
    result = run_streamer(mpiexec, 2, write_config(tmp_path / "p.yaml", config))
    assert result.returncode == 0, result.stderr
    report = receiver.join()
    assert report.ok, report.summary()
    assert total_line(result.stdout)["events"] == 10  # every event of the file, once
    assert sum(receiver.events_per_message) == 10
    assert "calibration: skip: constants are not loaded" in result.stderr
    # without calibration: skip, raw.image with no constants is refused, not silently skipped
    config["event_source"] = {"type": "Psana2EventSource"}
    refused = run_streamer(mpiexec, 2, write_config(tmp_path / "q.yaml", config), timeout=60)
    assert refused.returncode != 0
    assert "calibration constants cannot be loaded" in refused.stderr


def test_receive_cli_writes_files_and_reports(mpiexec: str, tmp_path: Path) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    receiver = subprocess.Popen(
        [
            BIN / "lclstream-receive",
            "--url",
            url,
            "--transport",
            "nng",
            "--out",
            str(out),
            "--expect-producers",
            "2",
            "--timeout",
            "60",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    config = write_config(tmp_path / "c.yaml", synthetic_config(url, "nng", "client", events=6))
    result = run_streamer(mpiexec, 2, config)
    assert result.returncode == 0, result.stderr
    stdout, _ = receiver.communicate(timeout=60)
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert receiver.returncode == 0 and summary["ok"] and summary["events"] == 12
    assert len(list(out.glob("*.h5"))) == summary["messages"] == 4


def test_receive_cli_times_out_nonzero(tmp_path: Path) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [BIN / "lclstream-receive", "--url", url, "--timeout", "0.5", "--quiet"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["timed_out"] is True


def test_corrupt_message_is_reported_and_receiver_goes_on() -> None:
    from airflow_provider_lclstream.protocol import HDF5_SIGNATURE, EndOfStream
    from airflow_provider_lclstream.streamer.serializers.hdf5 import HDF5BinarySerializer
    from airflow_provider_lclstream.transports import open_sender

    url = f"tcp://127.0.0.1:{free_port()}"
    background = BackgroundReceiver(url, "zmq", bind=True, producers=1)
    report = background.report
    with open_sender(url, "zmq", send_timeout_s=10) as sender:
        sender.send(HDF5_SIGNATURE + b"garbage")
        sender.send(HDF5BinarySerializer({"x": "/x"}).serialize({"x": np.zeros(3)}, {}))
        sender.send(EndOfStream(producer="p", messages=2).encode())
    background.join()
    assert report.corrupt == [0]
    assert report.messages == 1
    assert not report.ok
