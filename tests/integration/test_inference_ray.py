"""Streaming inference on a real local Ray: lclstreamer (MPI) -> lclstream-buffer -> readers ->
Q1 -> PeakNet (tiny config, CPU) -> writers -> CXI files, and the failure modes."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.integration.buffer_consumer import free_port, start_buffer, url, wait_consumers
from tests.integration.inference_helpers import direct_logits, tiny_model_files
from tests.integration.streaming import BIN, write_config

ray = pytest.importorskip("ray")

from airflow_provider_lclstream.inference.config import (  # noqa: E402
    PipelineSettings,
    load_model_config,
)
from airflow_provider_lclstream.inference.cxi import read_peaks  # noqa: E402
from airflow_provider_lclstream.inference.pipeline import run_pipeline, start_ray  # noqa: E402

SHAPE = [2, 48, 60]  # panels, H, W: padded to 64 x 64 for the model


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    start_ray(num_cpus=2, object_store_mb=100)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_model_files(tmp_path_factory.mktemp("model"))


def settings(model_files: tuple[Path, Path], out: Path, **extra: object) -> PipelineSettings:
    config, checkpoint = model_files
    values: dict = {"height": 64, "width": 64, "batch_size": 4, "min_peaks": 3,
                    "model": load_model_config(config), "checkpoint": str(checkpoint),
                    "out": str(out), "timeout_s": 60}  # fmt: skip
    values.update(extra)
    return PipelineSettings(**values)


def streamer_config(url: str, events: int) -> dict:
    return {
        "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": events},
        "data_sources": {
            "detector_data": {"type": "SyntheticDetector", "shape": SHAPE, "peaks_per_frame": 8},
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 3},
        "data_serializer": {"type": "HDF5BinarySerializer",
                            "fields": {"detector_data": "/data/data"}},
        "data_handlers": [
            {"type": "BinaryDataStreamingDataHandler", "urls": [url], "library": "zmq",
             "role": "client"}
        ],
    }  # fmt: skip


@pytest.mark.mpi
def test_stream_to_cxi_through_the_buffer_matches_a_direct_model_call(
    mpiexec: str, model_files: tuple[Path, Path], tmp_path: Path
) -> None:
    inp, out, port = url(), url(), free_port()
    buffer = start_buffer(tmp_path / "buffer.log", "--input", inp, "--output", out,
                          "--expect-producers", "2", "--metrics", f"127.0.0.1:{port}")  # fmt: skip
    s = settings(model_files, tmp_path / "cxi", url=out, readers=2, all_events=True,
                 save_frames=True, keep_logits=True, events_per_file=5)  # fmt: skip
    result: list = []
    runner = threading.Thread(target=lambda: result.append(run_pipeline(s)), daemon=True)
    runner.start()
    wait_consumers(port, 2, timeout_s=120)  # both readers connected before data flows
    config = write_config(tmp_path / "streamer.yaml", streamer_config(inp, events=7))
    streamer = subprocess.Popen(
        [mpiexec, "-n", "2", str(BIN / "lclstreamer"), "-c", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    runner.join(180)
    assert result, "the pipeline did not finish"
    summary = result[0]
    assert streamer.wait(60) == 0, streamer.stderr.read() if streamer.stderr else ""
    assert buffer.wait(30) == 0, (tmp_path / "buffer.log").read_text()
    assert summary.ok, summary.model_dump_json(indent=1)
    # Accounting: every frame the buffer announced went in, through the model, into a file.
    assert summary.buffer_events == 14
    assert summary.frames_in == summary.frames_inferred == summary.frames_written == 14
    assert summary.q1.samples > 0 and summary.stage_s_per_batch.p > 0
    files = [read_peaks(f) for f in summary.files]
    assert len(files) == len(summary.files) >= 3  # at most 5 events per file
    assert sum(len(f["nPeaks"]) for f in files) == 14
    assert sum(int(f["nPeaks"].sum()) for f in files) == summary.peaks
    assert sum(int((f["nPeaks"] >= 3).sum()) for f in files) == summary.hits
    assert len({e for f in files for e in f["event_id"]}) == 14  # each event exactly once
    # The model really ran: the pipeline's logits equal a direct model(batch) call.
    config, checkpoint = model_files
    for f in files:
        frames = f["data"].reshape(len(f["data"]), SHAPE[0], SHAPE[1], SHAPE[2])
        assert frames.max() > 1000  # the synthetic detector's planted peaks are in the frames
        expected = direct_logits(config, checkpoint, frames, 64, 64)
        np.testing.assert_allclose(f["logits"], expected, rtol=1e-4, atol=1e-4)
        # ... and the peak counts follow from that segmentation.
        from airflow_provider_lclstream.inference.peaks import find_peaks

        for i in range(len(frames)):
            seg = expected[i].argmax(axis=1)
            padded = np.zeros((SHAPE[0], 64, 64), np.float32)
            padded[:, : SHAPE[1], : SHAPE[2]] = frames[i]
            peaks = find_peaks(seg, padded, (0, 0, 0, 0, SHAPE[1], SHAPE[2]))
            assert len(peaks) == f["nPeaks"][i]


def test_memory_feed_bounded_q1_and_hits_only(
    model_files: tuple[Path, Path], tmp_path: Path
) -> None:
    frames = np.random.default_rng(1).normal(100, 5, (4, 2, 64, 64)).astype(np.float32)
    s = settings(model_files, tmp_path / "cxi", q1_size=2, min_peaks=10**6)
    summary = run_pipeline(s, memory=(frames, 6))
    assert summary.ok and summary.source == "memory"
    assert summary.frames_in == summary.frames_inferred == 24
    assert summary.hits == 0 and summary.frames_written == 0 and summary.files == []
    assert 0 <= summary.q1.mean <= 2 and summary.q1.capacity == 2


def test_p_actor_that_dies_is_restarted_and_its_batch_retried(
    model_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_lclstream.inference.stages import CRASH_ENV

    monkeypatch.setenv(CRASH_ENV, "2")  # the P actor's process exits on its 2nd batch
    frames = np.random.default_rng(2).normal(100, 5, (4, 2, 64, 64)).astype(np.float32)
    s = settings(model_files, tmp_path / "cxi", all_events=True, max_restarts=1)
    summary = run_pipeline(s, memory=(frames, 5))
    assert summary.ok, summary.model_dump_json(indent=1)
    assert summary.p_restarts == 1 and summary.lost == []
    assert summary.frames_in == summary.frames_inferred == summary.frames_written == 20
    events = [e for f in summary.files for e in read_peaks(f)["event_id"]]
    assert len(events) == len(set(events)) == 20  # the retried batch was written once


def test_p_actor_out_of_restarts_fails_naming_what_was_lost(
    model_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_lclstream.inference.stages import CRASH_ENV

    monkeypatch.setenv(CRASH_ENV, "2")
    frames = np.random.default_rng(3).normal(100, 5, (4, 2, 64, 64)).astype(np.float32)
    s = settings(model_files, tmp_path / "cxi", max_restarts=0)
    summary = run_pipeline(s, memory=(frames, 3))
    assert not summary.ok and summary.error_kind == "InferenceError"
    assert summary.frames_in == 12 and summary.frames_inferred == 4  # only batch 1 got through
    assert len(summary.lost) == 2, summary.lost
    for lost, batch in zip(sorted(summary.lost), ("m0-b1", "m0-b2"), strict=True):
        assert lost.startswith(f"batch {batch} (4 frames, P actor 0): "), lost
        assert "ActorDiedError" in lost or "actor died" in lost.lower(), lost
    assert "2 batches lost" in (summary.error or "")


def test_buffer_that_never_answers_fails_naming_the_url(
    model_files: tuple[Path, Path], tmp_path: Path
) -> None:
    silent = url()
    s = settings(model_files, tmp_path / "cxi", url=silent, readers=1, timeout_s=2)
    summary = run_pipeline(s)
    assert not summary.ok and summary.error_kind == "BufferTimeoutError"
    assert silent in (summary.error or "") and "2 s" in (summary.error or "")


def _message(data: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["/data/data"] = data
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (np.zeros((2, 5), np.float32), "shape (2, 5)"),
        (np.zeros((2, 8, 8), bool), "dtype bool"),
    ],
)
def test_frames_of_a_wrong_shape_or_dtype_name_the_field(
    model_files: tuple[Path, Path], tmp_path: Path, data: np.ndarray, words: str
) -> None:
    from airflow_provider_lclstream.protocol import EndOfStream
    from airflow_provider_lclstream.transports import open_sender

    address = url()

    def produce() -> None:
        # no send timeout: the reader connects once Ray started its actor, which took over
        # 60 s on a loaded machine (the test's timeout bounds the wait)
        with open_sender(address, "zmq", bind=True, send_timeout_s=None) as sender:
            sender.send(_message(data))  # waits for the reader to connect
            sender.send(EndOfStream(producer="test", messages=1).encode())

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    s = settings(model_files, tmp_path / "cxi", url=address, readers=1, timeout_s=30)
    summary = run_pipeline(s)
    producer.join(30)
    assert summary.error_kind == "FrameError", summary.error
    assert "/data/data" in (summary.error or "") and words in (summary.error or "")


def test_cli_help_and_bad_input(model_files: tuple[Path, Path], tmp_path: Path) -> None:
    tool = str(Path(sys.executable).parent / "lclstream-infer")
    shown = subprocess.run([tool, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "Examples:" in shown.stdout and "--checkpoint" in shown.stdout
    config, _ = model_files
    missing = subprocess.run(
        [tool, "--url", url(), "--model-config", str(config), "--checkpoint",
         str(tmp_path / "nope.safetensors")], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and "nope.safetensors: no such file" in missing.stderr
    odd = subprocess.run(
        [tool, "--url", url(), "--model-config", str(config), "--checkpoint", "x.pt",
         "--height", "100"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert odd.returncode == 2 and "--height" in odd.stderr and "multiple of 32" in odd.stderr
