"""The component registry (config/streamer.py) drives config parsing and the engine."""

from __future__ import annotations

import typing

import pytest
from pydantic import TypeAdapter, ValidationError

from airflow_provider_lclstream.config.streamer import COMPONENTS, DATA_SOURCES, EVENT_SOURCES
from airflow_provider_lclstream.config.streamer_components import (
    STEP_KINDS,
    STEPS,
    Psana2Timestamp,
    RoiStep,
    StepConfig,
)
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.streamer.components import engine_for, step_for
from airflow_provider_lclstream.streamer.sources.base import generic_value

PSANA_ONLY = {
    "Psana1Timestamp",
    "Psana2Timestamp",
    "Psana1DetectorInterface",
    "Psana2DetectorInterface",
    "Psana2RunInfo",
}


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_every_class_has_an_engine_that_imports(key: str) -> None:
    component = COMPONENTS[key]
    without = set(component.classes) - set(component.engines)
    assert without <= PSANA_ONLY, without
    assert set(component.engines) <= set(component.classes)
    for name, path in component.engines.items():
        model = component.classes[name]
        spec = model.model_construct(type=name)
        assert callable(engine_for(component, spec)), path


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_the_config_union_is_the_registry(key: str) -> None:
    component = COMPONENTS[key]
    union = typing.get_args(component.annotation())[0]
    members = typing.get_args(union) or (union,)
    assert {m.model_fields["type"].default for m in members} == set(component.classes)


def test_unknown_class_names_the_known_ones() -> None:
    adapter = TypeAdapter(EVENT_SOURCES.annotation())
    with pytest.raises(ValidationError, match="known: Hdf5EventSource, InternalEventSource"):
        adapter.validate_python({"type": "KafkaEventSource"})


def test_a_class_without_an_engine_fails_clearly() -> None:
    spec = Psana2Timestamp()
    assert generic_value("t", spec, "src", 0) is None  # read by the psana2 event source
    with pytest.raises(LCLStreamError, match="no engine for data source class 'Psana2Timestamp'"):
        engine_for(DATA_SOURCES, spec)


def test_steps_come_from_one_table() -> None:
    union = typing.get_args(typing.get_args(StepConfig)[0])
    assert {m.model_fields["kind"].default for m in union} == set(STEPS) == set(STEP_KINDS)
    step = step_for(RoiStep(field="x", y0=0, y1=2, x0=0, x1=2))
    assert callable(step)
