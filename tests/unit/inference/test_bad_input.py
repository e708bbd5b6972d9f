"""Bad input to lclstream-infer: each error names the field or file (no Ray needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from airflow_provider_lclstream.inference import cli  # noqa: E402
from airflow_provider_lclstream.inference.config import (  # noqa: E402
    PipelineSettings,
    load_model_config,
)
from airflow_provider_lclstream.inference.errors import FrameError, ModelConfigError  # noqa: E402
from airflow_provider_lclstream.inference.frames import (  # noqa: E402
    BatchAssembler,
    message_frames,
)
from tests.integration.inference_helpers import TINY, tiny_model_files  # noqa: E402


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (
            {"/other": np.zeros((1, 8, 8))},
            "no dataset '/data/data' (it has ['/other']); set --field",
        ),
        ({"/data/data": np.zeros((2, 5), np.float32)}, "has shape (2, 5); expected"),
        ({"/data/data": np.zeros((2, 3, 2, 8, 8))}, "a channel axis (axis 2) must be 1"),
        ({"/data/data": np.zeros((2, 8, 8), complex)}, "has dtype complex128"),
        ({"/data/data": np.array([b"a", b"b"])}, "dtype |S1"),
    ],
)
def test_frames_of_the_wrong_shape_or_dtype(data: dict, words: str) -> None:
    with pytest.raises(FrameError, match="^reader 0, message 3: ") as err:
        message_frames(data, "/data/data", "reader 0, message 3")
    assert words in str(err.value)


def test_frames_that_change_shape_mid_run_name_the_message() -> None:
    settings = PipelineSettings(height=32, width=32, batch_size=4,
                                model=load_model_config(None))  # fmt: skip
    assembler = BatchAssembler(settings, "r0")
    list(assembler.add(np.zeros((3, 2, 20, 20)), ["a", "b", "c"], None, "message 0"))
    with pytest.raises(FrameError, match=r"message 1: frames of shape \(2, 20, 24\), but this"):
        list(assembler.add(np.zeros((1, 2, 20, 24)), ["d"], None, "message 1"))


def test_model_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="absent.yaml: no such file"):
        load_model_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TINY, "bifpn": {"num_blockz": 1}}))
    with pytest.raises(ModelConfigError, match=r"bad.json: bifpn.num_blockz: Extra inputs"):
        load_model_config(bad)


def test_cli_checkpoint_not_matching_the_config_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = tiny_model_files(tmp_path)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY, "bifpn": {"block": {"num_features": 8}}}))
    wrong = tmp_path / "wrong.pt"
    assert cli.main(["--model-config", str(other), "--write-random-checkpoint", str(wrong)]) == 0
    capsys.readouterr()
    code = cli.main(["--url", "tcp://127.0.0.1:1", "--model-config", str(config),
                     "--checkpoint", str(wrong), "--height", "64", "--width", "64"])  # fmt: skip
    stderr = capsys.readouterr().err
    assert code == 2
    assert f"checkpoint {wrong} does not match the model config" in stderr
    assert "backbone_to_bifpn" in stderr and "--model-config" in stderr
    code = cli.main(["--url", "tcp://127.0.0.1:1", "--model-config", str(other),
                     "--checkpoint", str(tmp_path / "gone.safetensors")])  # fmt: skip
    assert code == 2 and "gone.safetensors: no such file" in capsys.readouterr().err
