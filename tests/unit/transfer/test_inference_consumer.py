"""The lclstream-infer consumer of lclstream_peaknet_inference: request, command, summary."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from airflow_provider_lclstream.transfer.inference import (
    InferenceSummaryError,
    check_summary,
    inference_request,
    output_directory,
    read_summary,
)
from airflow_provider_lclstream.transfer.request import InvalidTransferRequest

REQUEST = {"synthetic": True, "output_dir": "/data/out", "consumers": 3}
PARAMS = {"checkpoint": "/models/peaknet.safetensors", "model_config": "/models/peaknet.yaml",
          "height": 64, "width": 64, "readers": 3, "save_frames": True, "p_actors": None,
          "exp": "ignored", "gpu_partition": ""}  # fmt: skip


def test_one_consumer_running_lclstream_infer_with_quoted_arguments() -> None:
    request = inference_request(REQUEST, PARAMS, "manual__2026-12-01T10:00:00+00:00")
    assert request["consumers"] == 1  # parallelism is --readers inside the one job
    lines = request["consumer_command"].splitlines()
    assert lines[0] == "mkdir -p /data/out/synthetic/peaknet-manual__2026-12-01T10_00_00_00_00"
    args = shlex.split(lines[1])
    assert args[0].endswith("lclstream-infer")
    assert args[args.index("--url") + 1] == "$LCLSTREAM_URL"  # left for the job's shell
    assert '--url "$LCLSTREAM_URL"' in lines[1]
    assert args[args.index("--checkpoint") + 1] == "/models/peaknet.safetensors"
    assert args[args.index("--readers") + 1] == "3" and "--save-frames" in args
    assert "--p-actors" not in args and "--address" not in args and "--all-events" not in args
    assert args[args.index("--summary") + 1].endswith("/summary.json")


def test_ray_cluster_in_the_slurm_allocation_is_valid_bash() -> None:
    params = {**PARAMS, "ray": "slurm", "gpu_partition": "ampere", "gpus_per_node": 4, "nodes": 2}
    request = inference_request({**REQUEST, "consumer": {"backend": "slurm"}}, params, "r1")
    script = request["consumer_command"]
    assert request["consumer"]["attributes"] == {"partition": "ampere", "gpus_per_node": "4",
                                                 "nodes": "2"}  # fmt: skip
    assert "start --head --port=6379 --block &" in script and '-x "$head"' in script
    assert script.splitlines()[-1].endswith('--address "$address"')
    checked = subprocess.run(["bash", "-n"], input="set -euo pipefail\n" + script, text=True,
                             capture_output=True)  # fmt: skip
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    ("request_", "params", "words"),
    [
        ({**REQUEST, "consumer_template": "crystfel"}, PARAMS, "consumer_template: this DAG"),
        (REQUEST, {**PARAMS, "checkpoint": ""}, "checkpoint: required"),
        (REQUEST, {**PARAMS, "checkpoint": "/m/w.pt; rm -rf ~"}, "checkpoint: Value error"),
        (REQUEST, {**PARAMS, "model_config": "../../etc/x"}, "model_config: Value error"),
        (REQUEST, {**PARAMS, "ray": "address"}, "needs ray_address"),
        (REQUEST, {**PARAMS, "ray_address": "h:1"}, "only used with ray: address"),
        (REQUEST, {**PARAMS, "readers": 0}, "readers: Input should be greater"),
        (REQUEST, {**PARAMS, "gpu_partition": "a b"}, "consumer attributes"),
    ],
)
def test_bad_requests_name_the_field(request_: dict, params: dict, words: str) -> None:
    with pytest.raises(InvalidTransferRequest, match=words.replace("(", r"\(")):
        inference_request(request_, params, "r1")


def test_summary_must_exist_be_ok_and_match_the_buffer(tmp_path: Path) -> None:
    with pytest.raises(InferenceSummaryError, match="summary.json: no summary"):
        read_summary(tmp_path)
    good = {"ok": True, "frames_in": 12, "frames_inferred": 12, "lost": []}
    (tmp_path / "summary.json").write_text(json.dumps(good))
    check_summary(read_summary(tmp_path), 12, tmp_path)
    with pytest.raises(InferenceSummaryError, match="buffer delivered 14 events, the readers"):
        check_summary(good, 14, tmp_path)
    failed = {**good, "ok": False, "error": "1 batches lost", "lost": ["batch r0-b1 (4 frames"]}
    with pytest.raises(InferenceSummaryError, match="failed: 1 batches lost; lost:.*r0-b1"):
        check_summary(failed, 12, tmp_path)


def test_output_directory_is_per_run() -> None:
    from airflow_provider_lclstream.config.transfer import TransferRequest

    request = TransferRequest.model_validate({"exp": "xpptut15", "run": 14, "output_dir": "/o"})
    assert (
        str(output_directory(request, "scheduled__x+y"))
        == "/o/xpptut15-r0014/peaknet-scheduled__x_y"
    )
