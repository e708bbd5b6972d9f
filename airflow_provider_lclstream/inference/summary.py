"""The summary document of one inference run (printed by ``lclstream-infer`` as one JSON line)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class QueueOccupancy(BaseModel):
    capacity: int
    samples: int = 0
    mean: float = 0.0
    mean_fraction: float = 0.0
    empty_fraction: float = Field(default=0.0, description="share of samples with Q1 empty")


class StageTimes(BaseModel):
    """Mean seconds per batch in each stage (S: parse + pad + put; P: model; W: peaks + write)."""

    s: float = 0.0
    s_wait: float = Field(default=0.0, description="readers blocked on a full Q1")
    p: float = 0.0
    w: float = 0.0


class InferenceSummary(BaseModel):
    ok: bool
    error: str | None = None
    error_kind: str | None = Field(
        default=None, description="FrameError, BufferTimeoutError, InferenceError, ..."
    )
    source: str
    frames_in: int = 0
    frames_inferred: int = 0
    frames_written: int = 0
    hits: int = 0
    peaks: int = 0
    peaks_truncated: int = 0
    files: list[str] = Field(default_factory=list)
    batches: int = 0
    messages: int = 0
    buffer_events: int | None = Field(
        default=None, description="events the buffer announced for all its consumers together"
    )
    readers: int = 0
    p_actors: int = 0
    writers: int = 0
    device: str = "cpu"
    p_restarts: int = 0
    lost: list[str] = Field(default_factory=list)
    q1: QueueOccupancy
    stage_s_per_batch: StageTimes = Field(default_factory=StageTimes)
    elapsed_s: float = 0.0
    frames_per_s: float = Field(
        default=0.0, description="frames inferred per second, from the first batch to the end"
    )
