"""Find the engine of a configured component through the one registry in ``config/streamer.py``.

The registry names each engine as a ``module:attribute`` path; modules are imported on first use,
so psana and friends load only when a config asks for them.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.config.streamer_components import STEPS
from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_lclstream.config.streamer import Component
    from airflow_provider_lclstream.config.streamer_components import ComponentModel, StepModel


@cache
def _load(path: str) -> Callable[..., Any]:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]


def has_engine(component: Component, spec: ComponentModel) -> bool:
    """Whether ``spec``'s class has an engine of its own (psana data sources have none)."""
    return spec.type in component.engines


def engine_for(component: Component, spec: ComponentModel) -> Callable[..., Any]:
    """The callable that builds ``spec``'s engine; a class without one is an error."""
    path = component.engines.get(spec.type)
    if path is None:
        have = ", ".join(sorted(component.engines))
        raise LCLStreamError(
            f"{component.key}: no engine for {component.name} class {spec.type!r}; "
            f"classes with one: {have}"
        )
    return _load(path)


def step_for(step: StepModel) -> Callable[..., Any]:
    """The engine's step for a reduction step's config (``STEPS`` in the config registry)."""
    return _load(STEPS[step.kind][1])(**step.model_dump(exclude={"kind"}))
