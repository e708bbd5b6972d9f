"""PeakNet model config and pipeline settings (pydantic; no torch here).

The model config mirrors PeakNet's own (``backbone``: ConvNeXt V2 ``transformers`` config
keywords, ``bifpn``, ``seg_head``), so a file written for a trained PeakNet checkpoint builds
the same modules. Unknown keys are errors that name the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from airflow_provider_lclstream.inference.errors import ModelConfigError
from airflow_provider_lclstream.streamer.pipelines.padding import PadStyle


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BNConfig(_Strict):
    eps: float = 1e-5
    momentum: float = 0.1


class FusionConfig(_Strict):
    eps: float = 1e-5


class BiFPNBlockConfig(_Strict):
    relu_inplace: bool = False
    down_scale_factor: float = 0.5
    up_scale_factor: int = 2
    num_features: int = Field(default=256, ge=1)
    num_levels: int = Field(default=4, ge=1)
    base_level: int = 2
    bn: BNConfig = Field(default_factory=BNConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)


class BiFPNConfig(_Strict):
    num_blocks: int = Field(default=1, ge=1)
    block: BiFPNBlockConfig = Field(default_factory=BiFPNBlockConfig)


class SegHeadConfig(_Strict):
    up_scale_factor: list[int] = Field(default_factory=lambda: [4, 8, 16, 32])
    num_groups: int = Field(default=32, ge=1)
    out_channels: int = Field(default=256, ge=1)
    num_classes: int = Field(default=2, ge=2)
    base_scale_factor: int = 2
    uses_learned_upsample: bool = False


def default_backbone() -> dict[str, Any]:
    return {"num_channels": 1, "out_features": ["stage1", "stage2", "stage3", "stage4"]}


class PeakNetModelConfig(_Strict):
    """PeakNet: ``backbone`` holds ``transformers.ConvNextV2Config`` keywords."""

    backbone: dict[str, Any] = Field(default_factory=default_backbone)
    bifpn: BiFPNConfig = Field(default_factory=BiFPNConfig)
    seg_head: SegHeadConfig = Field(default_factory=SegHeadConfig)

    @model_validator(mode="after")
    def _consistent(self) -> PeakNetModelConfig:
        stages = self.backbone.get("out_features") or []
        if len(stages) != len(self.seg_head.up_scale_factor):
            raise ValueError(
                f"backbone.out_features has {len(stages)} stages but seg_head.up_scale_factor "
                f"has {len(self.seg_head.up_scale_factor)} entries: they must match"
            )
        if self.seg_head.out_channels % self.seg_head.num_groups:
            raise ValueError("seg_head.out_channels must be a multiple of seg_head.num_groups")
        return self

    @property
    def in_channels(self) -> int:
        return int(self.backbone.get("num_channels", 3))

    @property
    def stride(self) -> int:
        """Input height and width must be multiples of this (the deepest feature map's)."""
        return max(self.seg_head.up_scale_factor)


def load_model_config(path: str | Path | None) -> PeakNetModelConfig:
    """Read a model config (YAML or JSON, optionally under a ``model:`` key); None: defaults."""
    if path is None:
        return PeakNetModelConfig()
    file = Path(path)
    if not file.is_file():
        raise ModelConfigError(f"model config {file}: no such file")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ModelConfigError(f"model config {file}: not YAML or JSON: {err}") from err
    if isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    try:
        return PeakNetModelConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        raise ModelConfigError(f"model config {file}: {problems}") from err


def write_model_config(config: PeakNetModelConfig, path: str | Path) -> Path:
    file = Path(path)
    file.write_text(json.dumps(config.model_dump(), indent=2) + "\n")
    return file


class PipelineSettings(_Strict):
    """Everything one run of the pipeline needs besides the URL (plain JSON, sent to actors)."""

    url: str | None = None
    transport: Literal["zmq", "nng"] = "zmq"
    field: str = "/data/data"
    timestamp_field: str = "/data/timestamp"
    readers: int = Field(default=2, ge=1, le=256)
    batch_size: int = Field(default=8, ge=1, description="frames per batch")
    height: int = Field(default=512, ge=1)
    width: int = Field(default=512, ge=1)
    pad_style: PadStyle = "bottom-right"
    q1_size: int = Field(default=8, ge=1, description="batches Q1 holds before readers wait")
    inflight_per_actor: int = Field(default=2, ge=1, description="batches queued at each P actor")
    p_actors: int | None = Field(default=None, ge=1, description="default: one per GPU, or 1")
    writers: int = Field(default=1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    instance_norm: bool = True
    min_peaks: int = Field(default=10, ge=0, description="a hit has at least this many peaks")
    max_peaks: int = Field(default=2048, ge=1, description="peaks kept per event in the CXI")
    events_per_file: int = Field(default=1000, ge=1)
    save_frames: bool = False
    all_events: bool = False
    keep_logits: bool = False
    out: str = "."
    prefix: str = "peaks"
    timeout_s: float = Field(default=600.0, gt=0)
    max_restarts: int = Field(default=2, ge=0)
    max_task_retries: int = Field(default=2, ge=0)
    sample_interval_s: float = Field(default=0.05, gt=0)
    torch_threads: int | None = Field(default=None, ge=1)
    checkpoint: str | None = None
    model: PeakNetModelConfig = Field(default_factory=PeakNetModelConfig)

    @model_validator(mode="after")
    def _fits_model(self) -> PipelineSettings:
        stride = self.model.stride
        for name in ("height", "width"):
            if getattr(self, name) % stride:
                raise ValueError(
                    f"{name}={getattr(self, name)} (--{name}) is not a multiple of {stride}, "
                    "the model's largest down-scaling (seg_head.up_scale_factor)"
                )
        return self
