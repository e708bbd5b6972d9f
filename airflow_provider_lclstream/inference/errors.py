"""One exception per failure mode of the inference consumer."""

from __future__ import annotations

from airflow_provider_lclstream.exceptions import LCLStreamError, MissingDependencyError


class InferenceError(LCLStreamError):
    """The pipeline could not finish: a stage failed, or frames were lost (named in the text)."""


class FrameError(InferenceError, ValueError):
    """A message's frames have a shape or dtype the model cannot take."""


class CheckpointError(InferenceError, ValueError):
    """The checkpoint is missing, unreadable, or does not match the model config."""


class ModelConfigError(InferenceError, ValueError):
    """The model config file is missing or invalid."""


class BufferTimeoutError(InferenceError, TimeoutError):
    """The buffer (or producers) sent nothing for longer than the timeout."""


def require_inference_extra(module: str) -> None:
    """Raise a clear error when a dependency of the ``inference`` extra is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(module, "inference", "lclstream-infer")
