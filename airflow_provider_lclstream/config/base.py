"""Base classes of the config models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ComponentModel(StrictModel):
    """Base of every component class: ``type`` names the class (each narrows it to a literal)."""

    type: str
