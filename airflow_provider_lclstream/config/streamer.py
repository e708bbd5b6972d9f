"""The normalized LCLStreamer configuration: one model for both upstream YAML formats.

Old upstream class names (``Hdf5Serializer``, ``Psana1AreaDetector``, ...) are rewritten to a
canonical class by :func:`resolve_component` before validation, keeping what the old class meant
in the new one's fields. The flat (type-tagged) upstream format validates directly with
``StreamerConfig.model_validate``; :mod:`airflow_provider_lclstream.config.loader` also reads
the older sectioned format, renders templates and turns validation errors into ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

import numpy as np
from pydantic import BaseModel, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from airflow_provider_lclstream.config.detectors import DETECTOR_SHAPES
from airflow_provider_lclstream.config.streamer_components import (
    SIMPLON_IMAGE_KINDS,
    SIMPLON_REQUIRED_SOURCES,
    STEP_KINDS,
    STEPS,
    BatchProcessingPipeline,
    BinaryDataStreamingDataHandler,
    BinaryFileWritingDataHandler,
    BinningStep,
    ComponentModel,
    ConstValue,
    DataHandlerModel,
    DType,
    GenericRandomNumpyArray,
    HDF5BinarySerializer,
    Hdf5EventSource,
    HitFilterStep,
    InternalEventSource,
    NoOpProcessingPipeline,
    PeaknetPreprocessingPipeline,
    ProcessingPipelineModel,
    Psana1DetectorInterface,
    Psana1EventSource,
    Psana1Timestamp,
    Psana2DetectorInterface,
    Psana2EventSource,
    Psana2RunInfo,
    Psana2Timestamp,
    RoiStep,
    Shape,
    SimplonBinarySerializer,
    SourceIdentifier,
    StepConfig,
    StrictModel,
    SyntheticDetector,
    ThresholdStep,
)

__all__ = [
    "CLASS_NAMES",
    "COMPONENTS",
    "DETECTOR_SHAPES",
    "SIMPLON_IMAGE_KINDS",
    "SIMPLON_REQUIRED_SOURCES",
    "STEPS",
    "STEP_KINDS",
    "BatchProcessingPipeline",
    "BinaryDataStreamingDataHandler",
    "BinaryFileWritingDataHandler",
    "BinningStep",
    "Component",
    "ComponentModel",
    "ConstValue",
    "DType",
    "DataHandlerModel",
    "DataSourceConfig",
    "EventSourceConfig",
    "GenericRandomNumpyArray",
    "HDF5BinarySerializer",
    "HandlerConfig",
    "Hdf5EventSource",
    "HitFilterStep",
    "InternalEventSource",
    "NoOpProcessingPipeline",
    "PeaknetPreprocessingPipeline",
    "PipelineConfig",
    "ProcessingPipelineModel",
    "Psana1DetectorInterface",
    "Psana1EventSource",
    "Psana1Timestamp",
    "Psana2DetectorInterface",
    "Psana2EventSource",
    "Psana2RunInfo",
    "Psana2Timestamp",
    "RoiStep",
    "SerializerConfig",
    "Shape",
    "SimplonBinarySerializer",
    "SourceIdentifier",
    "StepConfig",
    "StreamerConfig",
    "StrictModel",
    "SyntheticDetector",
    "ThresholdStep",
    "resolve_component",
]


# --------------------------------------------------------------------------- aliases


def _rename(canonical: str, **extra: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An alias that only renames the class (plus fixed extra keys)."""

    def translate(entry: dict[str, Any]) -> dict[str, Any]:
        return {**entry, **extra, "type": canonical}

    return translate


def _detector(
    canonical: str, fields: Callable[[dict[str, Any]], list[str]], *drop: str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An alias for an old one-purpose detector class: rewrite it as a detector interface."""

    def translate(entry: dict[str, Any]) -> dict[str, Any]:
        old = str(entry["type"])
        out = {k: v for k, v in entry.items() if k not in drop}
        out["type"] = canonical
        out["legacy_type"] = old
        chosen = fields(entry)
        if chosen:
            out["psana_fields"] = chosen
        return out

    return translate


def _calib_or_raw(calib: str, raw: str) -> Callable[[dict[str, Any]], list[str]]:
    # Upstream required ``calibration``; we default to calibrated data.
    return lambda entry: [calib if entry.get("calibration", True) else raw]


def _function_or(default: str) -> Callable[[dict[str, Any]], list[str]]:
    return lambda entry: [str(entry.get("psana_function") or default)]


_ENGINE = "airflow_provider_lclstream.streamer"


@dataclass(frozen=True)
class Component:
    """One component kind: its classes, the engine that runs each, and old names for them.

    This table is the one registry of streamer components: config parsing (the discriminated
    unions below and the sectioned loader), the engine (``streamer.components.engine_for``) and
    the generated reference all read it. ``engines`` holds dotted ``module:attribute`` paths so
    that the config layer names the engine without importing it; a class with no engine (a
    psana detector interface) is read by the event source it is named after.
    """

    key: str
    name: str
    title: str
    classes: Mapping[str, type[BaseModel]]
    engines: Mapping[str, str] = dc_field(default_factory=dict)
    aliases: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]] = dc_field(
        default_factory=dict
    )

    def choices(self) -> str:
        """The known class names, for error messages."""
        text = ", ".join(sorted(self.classes))
        if self.aliases:
            text += f" (old names also accepted: {', '.join(sorted(self.aliases))})"
        return text

    def annotation(self) -> Any:
        """The pydantic type of one entry: the classes' union, discriminated by ``type``, with
        old names rewritten and unknown ones reported first."""
        members = tuple(self.classes.values())
        union = members[0] if len(members) == 1 else Union[members]  # noqa: UP007 - built
        return Annotated[union, Field(discriminator="type"), _resolver(self)]


def _register(
    key: str,
    name: str,
    title: str,
    entries: list[tuple[type[BaseModel], str | None]],
    aliases: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
) -> Component:
    """A component from ``(model, engine path or None)`` pairs, keyed by the model's ``type``."""
    classes = {m.model_fields["type"].default: m for m, _ in entries}
    engines = {m.model_fields["type"].default: e for m, e in entries if e is not None}
    return Component(key, name, title, classes, engines, dict(aliases or {}))


EVENT_SOURCES = _register(
    "event_source",
    "event source",
    "Event sources (`event_source`)",
    [
        (InternalEventSource, f"{_ENGINE}.sources.internal:InternalEventSource"),
        (Psana1EventSource, f"{_ENGINE}.sources.psana1:Psana1EventSource"),
        (Psana2EventSource, f"{_ENGINE}.sources.psana2:Psana2EventSource"),
        (Hdf5EventSource, f"{_ENGINE}.sources.hdf5:Hdf5EventSource"),
    ],
)
DATA_SOURCES = _register(
    "data_sources",
    "data source",
    "Data sources (`data_sources.<name>`)",
    [
        (GenericRandomNumpyArray, f"{_ENGINE}.sources.base:random_array"),
        (ConstValue, f"{_ENGINE}.sources.base:const_value"),
        (SourceIdentifier, f"{_ENGINE}.sources.base:source_identifier"),
        (Psana1Timestamp, None),
        (Psana2Timestamp, None),
        (Psana1DetectorInterface, None),
        (Psana2DetectorInterface, None),
        (Psana2RunInfo, None),
        (SyntheticDetector, f"{_ENGINE}.sources.base:synthetic_frames"),
    ],
    {
        "FloatValue": _rename("ConstValue", dtype="float64"),
        "IntValue": _rename("ConstValue", dtype="int64"),
        "Psana1AreaDetector": _detector(
            "Psana1DetectorInterface", _calib_or_raw("calib", "raw"), "calibration"
        ),
        "Psana1AssembledAreaDetector": _detector("Psana1DetectorInterface", lambda e: ["image"]),
        # Upstream checked but never used psana_function for PVs: it is dropped.
        "Psana1PV": _detector("Psana1DetectorInterface", lambda e: [], "psana_function"),
        "Psana1BbmonDetectorTotalIntensity": _detector(
            "Psana1DetectorInterface", lambda e: ["get.TotalIntensity"]
        ),
        "Psana1IpmDetector": _detector(
            "Psana1DetectorInterface", _function_or("channel"), "psana_function"
        ),
        "Psana1UsdUsbDetector": _detector(
            "Psana1DetectorInterface", _function_or("values"), "psana_function"
        ),
        "Psana1EvrCodes": _detector("Psana1DetectorInterface", lambda e: ["eventCodes"]),
        "Psana2AreaDetector": _detector(
            "Psana2DetectorInterface", _calib_or_raw("raw.calib", "raw.raw"), "calibration"
        ),
        "Psana2AssembledAreaDetector": _detector(
            "Psana2DetectorInterface", lambda e: ["raw.image"]
        ),
        "Psana2PV": _detector("Psana2DetectorInterface", lambda e: [], "psana_function"),
    },
)
PIPELINES = _register(
    "processing_pipeline",
    "processing pipeline",
    "Processing pipelines (`processing_pipeline`)",
    [
        (NoOpProcessingPipeline, f"{_ENGINE}.pipelines.pipelines:noop_pipeline"),
        (BatchProcessingPipeline, f"{_ENGINE}.pipelines.pipelines:batch_pipeline"),
        (PeaknetPreprocessingPipeline, f"{_ENGINE}.pipelines.pipelines:peaknet_pipeline"),
    ],
)
SERIALIZERS = _register(
    "data_serializer",
    "data serializer",
    "Serializers (`data_serializer`)",
    [
        (HDF5BinarySerializer, f"{_ENGINE}.serializers.hdf5:from_config"),
        (SimplonBinarySerializer, f"{_ENGINE}.serializers.simplon:from_config"),
    ],
    {
        "Hdf5BinarySerializer": _rename("HDF5BinarySerializer"),
        "Hdf5Serializer": _rename("HDF5BinarySerializer"),
    },
)
HANDLERS = _register(
    "data_handlers",
    "data handler",
    "Data handlers (`data_handlers[]`)",
    [
        (BinaryFileWritingDataHandler, f"{_ENGINE}.handlers.handlers:file_handler"),
        (BinaryDataStreamingDataHandler, f"{_ENGINE}.handlers.handlers:streaming_handler"),
    ],
)
COMPONENTS: dict[str, Component] = {
    c.key: c for c in (EVENT_SOURCES, DATA_SOURCES, PIPELINES, SERIALIZERS, HANDLERS)
}
"""Components by their key in the flat config."""

CLASS_NAMES: frozenset[str] = frozenset(n for c in COMPONENTS.values() for n in c.classes)


def resolve_component(component: Component, entry: Any) -> Any:
    """Rewrite an entry's old class name to its canonical class; reject unknown names."""
    if not isinstance(entry, Mapping):
        return entry  # pydantic reports the wrong type
    name = entry.get("type")
    if name is None:
        raise PydanticCustomError(
            "unknown_class",
            "{message}",
            {"message": f"missing {component.name} class; choose one of {component.choices()}"},
        )
    if name in component.classes:
        return dict(entry)
    if isinstance(name, str) and name in component.aliases:
        return component.aliases[name](dict(entry))
    raise PydanticCustomError(
        "unknown_class",
        "{message}",
        {"message": f"unknown {component.name} class {name!r}; known: {component.choices()}"},
    )


def _resolver(component: Component) -> BeforeValidator:
    return BeforeValidator(lambda entry: resolve_component(component, entry))


if TYPE_CHECKING:  # the common base of each union's classes
    EventSourceConfig: TypeAlias = ComponentModel
    DataSourceConfig: TypeAlias = ComponentModel
    PipelineConfig: TypeAlias = ProcessingPipelineModel
    SerializerConfig: TypeAlias = ComponentModel
    HandlerConfig: TypeAlias = DataHandlerModel
else:
    EventSourceConfig = EVENT_SOURCES.annotation()
    DataSourceConfig = DATA_SOURCES.annotation()
    PipelineConfig = PIPELINES.annotation()
    SerializerConfig = SERIALIZERS.annotation()
    HandlerConfig = HANDLERS.annotation()


def _fail(path: str, message: str) -> None:
    """Raise a validation error that names the YAML path it is about."""
    raise PydanticCustomError("config", "{path}: {message}", {"path": path, "message": message})


class StreamerConfig(StrictModel):
    """A whole LCLStreamer run: where events come from, what is kept, how it leaves.

    ``data_sources`` keys name the arrays of each event (``dict[str, ndarray]``); pipeline
    ``steps``, serializer ``fields`` and ``Hdf5EventSource.datasets`` refer to them.
    """

    source_identifier: str = ""
    skip_incomplete_events: bool = False
    event_source: EventSourceConfig
    data_sources: dict[str, DataSourceConfig] = Field(min_length=1)
    processing_pipeline: PipelineConfig
    data_serializer: SerializerConfig
    data_handlers: list[HandlerConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_exist(self) -> StreamerConfig:
        known = sorted(self.data_sources)
        for i, step in enumerate(self.processing_pipeline.steps):
            if step.field not in self.data_sources:
                _fail(
                    f"processing_pipeline.steps[{i}].field",
                    f"{step.field!r} is not a data source; known: {known}",
                )
        source = self.event_source
        if isinstance(source, Hdf5EventSource):
            for name in source.datasets:
                if name not in self.data_sources:
                    _fail(f"event_source.datasets.{name}", f"not a data source; known: {known}")
        if isinstance(self.data_serializer, SimplonBinarySerializer):
            self._check_simplon(self.data_serializer)
        return self

    def simplon_image_source(self) -> str:
        """The data source a Simplon serializer sends: ``data_source_to_serialize`` when it
        names one, else ``detector_data`` (upstream names the psana field there)."""
        wanted = getattr(self.data_serializer, "data_source_to_serialize", "")
        return wanted if wanted in self.data_sources else "detector_data"

    def _check_simplon(self, serializer: SimplonBinarySerializer) -> None:
        image = self.simplon_image_source()
        needed = [image]
        if serializer.flavor == "lclstreamer":
            needed += [n for n in SIMPLON_REQUIRED_SOURCES if n != "detector_data"]
        missing = [n for n in needed if n not in self.data_sources]
        if missing:
            _fail(
                "data_sources",
                f"SimplonBinarySerializer (flavor {serializer.flavor}) needs data sources "
                f"{missing}; the image source is {image!r}",
            )
        source = self.data_sources[image]
        dtype = getattr(source, "dtype", None) or getattr(source, "array_dtype", None)
        if dtype is not None and np.dtype(dtype).kind not in SIMPLON_IMAGE_KINDS:
            _fail(
                f"data_sources.{image}.dtype",
                f"{dtype!r}: the Simplon image source {image!r} must be an integer or float "
                "type (e.g. uint16, int32, float32)",
            )
