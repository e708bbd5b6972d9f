"""Helpers for the inference tests: a tiny PeakNet config and checkpoint, direct model calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY = {
    "backbone": {
        "num_channels": 1,
        "hidden_sizes": [8, 16, 32, 64],
        "depths": [1, 1, 1, 1],
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
    "bifpn": {"num_blocks": 1, "block": {"num_features": 16}},
    "seg_head": {"num_groups": 4, "out_channels": 16},
}


def tiny_model_files(directory: Path) -> tuple[Path, Path]:
    """A tiny model config (JSON) and a seeded random safetensors checkpoint for it."""
    import json

    from airflow_provider_lclstream.inference.checkpoint import random_checkpoint
    from airflow_provider_lclstream.inference.config import load_model_config

    config = directory / "tiny.json"
    config.write_text(json.dumps(TINY))
    checkpoint = random_checkpoint(load_model_config(config), directory / "tiny.safetensors")
    return config, checkpoint


def direct_logits(config: Path, checkpoint: Path, frames: np.ndarray, height: int,
                  width: int) -> np.ndarray:  # fmt: skip
    """``model(batch)`` called here, on ``(F, P, h, w)`` frames: ``(F, P, classes, H, W)``."""
    import torch

    from airflow_provider_lclstream.inference.checkpoint import load_model
    from airflow_provider_lclstream.inference.config import load_model_config
    from airflow_provider_lclstream.inference.model import instance_norm
    from airflow_provider_lclstream.streamer.pipelines.padding import pad_crop

    model = load_model(load_model_config(config), checkpoint)
    padded = pad_crop(frames.astype(np.float32), height, width)
    x = torch.from_numpy(padded.reshape(-1, 1, height, width))
    with torch.inference_mode():
        logits = model(instance_norm(x)).numpy()
    return logits.reshape(*frames.shape[:2], -1, height, width)
