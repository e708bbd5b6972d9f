"""lclstream_peaknet_inference end to end in real Airflow 3.3 (``dag.test()``), local backend,
CPU: a 2-rank MPI streamer of synthetic frames with planted peaks -> a persistent buffer ->
one ``lclstream-infer`` job (a local Ray, a tiny PeakNet) -> CXI files -> ``report``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.dags.dag_runner import load_dag, task_states

pytest.importorskip("ray")
pytest.importorskip("torch")

pytestmark = [pytest.mark.airflow, pytest.mark.mpi]

SHAPE = [2, 48, 60]  # panels, H, W: padded to 64 x 64 for the model
RANKS, EVENTS = 2, 6


@pytest.fixture
def jobs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "jobs"
    monkeypatch.setenv("AIRFLOW__LCLSTREAM__JOBS_DIR", str(root))
    return root


def streamer_config() -> dict[str, Any]:
    return {
        "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": EVENTS},
        "data_sources": {
            "detector_data": {"type": "SyntheticDetector", "shape": SHAPE, "peaks_per_frame": 8},
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 4},
        "data_serializer": {"type": "HDF5BinarySerializer",
                            "fields": {"detector_data": "/data/data"}},
        "data_handlers": [{"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://x:1"]}],
    }  # fmt: skip


def test_peaknet_inference_dag_writes_cxi_peaks_from_the_model(
    airflow_db: Path, jobs_dir: Path, tmp_path: Path
) -> None:
    from airflow_provider_lclstream.inference.cxi import read_peaks
    from airflow_provider_lclstream.inference.peaks import find_peaks
    from tests.integration.inference_helpers import direct_logits, tiny_model_files

    config, checkpoint = tiny_model_files(tmp_path)
    dag = load_dag("lclstream_peaknet_inference")
    out = tmp_path / "out"
    conf = {
        "request": {"config": streamer_config(), "ranks": RANKS, "output_dir": str(out)},
        "checkpoint": str(checkpoint), "model_config": str(config), "height": 64, "width": 64,
        "batch_size": 4, "readers": 2, "device": "cpu", "min_peaks": 3, "all_events": True,
        "save_frames": True, "keep_logits": True, "events_per_file": 5, "timeout_s": 120,
    }  # fmt: skip
    started = time.monotonic()
    run = dag.test(run_conf=conf)
    elapsed = time.monotonic() - started
    states = task_states(run)
    assert run.state == "success", states
    assert set(states.values()) == {"success"}, states
    stats = run.get_task_instance("watch_transfer").xcom_pull(task_ids="watch_transfer")
    summary = run.get_task_instance("report").xcom_pull(task_ids="report")
    # Accounting: frames in (the buffer's count) = frames inferred = events in the CXI files.
    assert stats["events"] == RANKS * EVENTS and stats["producers_ended"] == RANKS
    assert summary["ok"] and summary["readers"] == 2 and summary["device"] == "cpu"
    assert summary["frames_in"] == summary["frames_inferred"] == summary["frames_written"] == 12
    written = sorted(Path(f) for f in summary["files"])
    assert written and all(f.is_relative_to(out) for f in written)
    assert json.loads(next(out.rglob("summary.json")).read_text()) == summary
    files = [read_peaks(f) for f in written]
    assert sum(len(f["nPeaks"]) for f in files) == 12
    assert len({e for f in files for e in f["event_id"]}) == 12  # each event exactly once
    assert sum(int(f["nPeaks"].sum()) for f in files) == summary["peaks"]
    assert sum(int((f["nPeaks"] >= 3).sum()) for f in files) == summary["hits"]
    # The model really ran: the logits in the files equal a direct model(batch) call on the
    # frames in the files (which hold the synthetic detector's planted peaks), and the peak
    # counts follow from that segmentation.
    for f in files:
        frames = f["data"].reshape(len(f["data"]), *SHAPE)
        assert frames.max() > 1000
        expected = direct_logits(config, checkpoint, frames, 64, 64)
        np.testing.assert_allclose(f["logits"], expected, rtol=1e-4, atol=1e-4)
        for i in range(len(frames)):
            padded = np.zeros((SHAPE[0], 64, 64), np.float32)
            padded[:, : SHAPE[1], : SHAPE[2]] = frames[i]
            peaks = find_peaks(expected[i].argmax(axis=1), padded, (0, 0, 0, 0, SHAPE[1], SHAPE[2]))
            assert len(peaks) == f["nPeaks"][i]
    print(f"peaknet inference dag.test() took {elapsed:.1f} s")


def test_bad_inference_params_fail_before_any_job(airflow_db: Path, jobs_dir: Path) -> None:
    dag = load_dag("lclstream_peaknet_inference")
    run = dag.test(run_conf={"request": {"synthetic": True},
                             "checkpoint": "/m/w.pt; rm -rf ~"})  # fmt: skip
    states = task_states(run)
    assert run.state == "failed" and states["build_request"] == "failed"
    assert states["start_buffer"] == "upstream_failed"
    assert not jobs_dir.exists() or not any(jobs_dir.iterdir())  # nothing was submitted
