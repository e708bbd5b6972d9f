"""The reduction steps of a processing pipeline (``processing_pipeline.steps[]``) and their
registry: ``STEPS`` maps each ``kind`` to its model and the engine's step class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias, Union

from pydantic import Field, model_validator

from airflow_provider_lclstream.config.base import StrictModel


class StepModel(StrictModel):
    """Base of the reduction steps: ``kind`` names the step (each narrows it to a literal)."""

    kind: str
    field: str = Field(min_length=1, description="name of the data source the step applies to")


class RoiStep(StepModel):
    """Crop the last two axes to ``[y0:y1, x0:x1]``."""

    kind: Literal["roi"] = "roi"
    y0: int = Field(ge=0)
    y1: int = Field(ge=1)
    x0: int = Field(ge=0)
    x1: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> RoiStep:
        if self.y1 <= self.y0 or self.x1 <= self.x0:
            raise ValueError(f"empty region: need y0 < y1 and x0 < x1, got {self.model_dump()}")
        return self


class ThresholdStep(StepModel):
    """Set values below ``value`` to 0."""

    kind: Literal["threshold"] = "threshold"
    value: float


class BinningStep(StepModel):
    """Sum ``factor`` x ``factor`` blocks of the last two axes."""

    kind: Literal["binning"] = "binning"
    factor: int = Field(ge=1)


class HitFilterStep(StepModel):
    """Drop events with fewer than ``min_pixels`` pixels above ``threshold``."""

    kind: Literal["hit_filter"] = "hit_filter"
    threshold: float
    min_pixels: int = Field(default=1, ge=1)


_STEP_ENGINE = "airflow_provider_lclstream.streamer.pipelines.steps"
STEPS: dict[str, tuple[type[StepModel], str]] = {
    model.model_fields["kind"].default: (model, f"{_STEP_ENGINE}:{engine}")
    for model, engine in (
        (RoiStep, "Roi"),
        (ThresholdStep, "Threshold"),
        (BinningStep, "Binning"),
        (HitFilterStep, "HitFilter"),
    )
}
"""The registry of reduction steps: ``kind`` -> (model, ``module:class`` of the engine's step);
the ``StepConfig`` union, the loader and the engine read it."""
STEP_KINDS: tuple[str, ...] = tuple(STEPS)

if TYPE_CHECKING:
    StepConfig: TypeAlias = StepModel
else:
    StepConfig = Annotated[
        Union[tuple(model for model, _ in STEPS.values())],  # noqa: UP007 - built
        Field(discriminator="kind"),
    ]
