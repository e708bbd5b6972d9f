"""PeakNet's module names (checkpoint compatibility), checkpoint errors, peaks, CXI round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from airflow_provider_lclstream.inference.checkpoint import (  # noqa: E402
    check_checkpoint,
    load_model,
    random_checkpoint,
)
from airflow_provider_lclstream.inference.config import PeakNetModelConfig  # noqa: E402
from airflow_provider_lclstream.inference.cxi import CxiWriter, read_peaks  # noqa: E402
from airflow_provider_lclstream.inference.errors import CheckpointError  # noqa: E402
from airflow_provider_lclstream.inference.peaks import find_peaks  # noqa: E402
from tests.integration.inference_helpers import TINY  # noqa: E402


def test_state_dict_uses_peaknet_module_names() -> None:
    names = set(load_model(PeakNetModelConfig.model_validate(TINY), None).state_dict())
    for name in (
        "backbone.embeddings.patch_embeddings.weight",
        "backbone_to_bifpn.3.weight",
        "bifpn.blocks.0.conv.m2.0.depthwise_conv.weight",
        "bifpn.blocks.0.conv.q5.1.running_mean",
        "bifpn.blocks.0.w_m",
        "bifpn.blocks.0.w_q",
        "seg_lateral_layers.3.layers.2.0.weight",
        "head_segmask.weight",
        "final_conv.weight",
    ):
        assert name in names, name


def test_checkpoint_missing_or_mismatched(tmp_path: Path) -> None:
    config = PeakNetModelConfig.model_validate(TINY)
    with pytest.raises(CheckpointError, match="no such file"):
        check_checkpoint(config, tmp_path / "absent.safetensors")
    other = PeakNetModelConfig.model_validate({**TINY, "bifpn": {"block": {"num_features": 8}}})
    path = random_checkpoint(other, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not match the model config.*backbone_to_bifpn"):
        check_checkpoint(config, path)
    with pytest.raises(CheckpointError, match="of another shape"):
        load_model(config, path)
    good = random_checkpoint(config, tmp_path / "good.safetensors")
    check_checkpoint(config, good)  # no error


def test_planted_blobs_become_peaks_in_panel_coordinates() -> None:
    seg = np.zeros((2, 16, 16), np.uint8)
    frame = np.zeros((2, 16, 16), np.float32)
    seg[0, 2:5, 3:6] = 1  # centre (3, 4) in the padded frame
    frame[0, 2:5, 3:6] = 10.0
    seg[1, 9:11, 9:11] = 1  # centre (9.5, 9.5)
    frame[1, 9:11, 9:11] = 50.0
    seg[1, 15, 15] = 1  # in the padding: dropped
    # the panel (12 x 12) was centre-padded by 2 rows and 2 columns
    peaks = find_peaks(seg, frame, (0, 0, 2, 2, 12, 12))
    assert list(peaks.panel) == [1, 0]  # strongest first
    np.testing.assert_allclose(peaks.y, [7.5, 1.0])
    np.testing.assert_allclose(peaks.x, [7.5, 2.0])
    np.testing.assert_allclose(peaks.intensity, [200.0, 90.0])


def test_cxi_layout_for_crystfel(tmp_path: Path) -> None:
    seg = np.zeros((2, 8, 8), np.uint8)
    seg[1, 2, 3] = 1
    peaks = find_peaks(seg, np.ones((2, 8, 8), np.float32), (0, 0, 0, 0, 8, 8))
    writer = CxiWriter(tmp_path, "t", events_per_file=2, max_peaks=4, save_frames=True,
                       keep_logits=False, attrs={})  # fmt: skip
    for i in range(3):
        writer.append(peaks, f"e{i}", float(i), 8, np.zeros((16, 8), np.float32))
    files = writer.close()
    assert [Path(f).name for f in files] == ["t_0000.cxi", "t_0001.cxi"]
    first = read_peaks(files[0])
    assert list(first["nPeaks"]) == [1, 1] and first["peakXPosRaw"].shape == (2, 4)
    assert first["peakYPosRaw"][0, 0] == 8 + 2  # panel 1 stacked under panel 0
    assert first["peakXPosRaw"][0, 0] == 3 and first["peakSegPosRaw"][0, 0] == 1
    assert first["data"].shape == (2, 16, 8) and list(first["event_id"]) == ["e0", "e1"]
