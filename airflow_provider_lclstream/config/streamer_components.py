"""Pydantic models of the LCLStreamer components, one class per canonical upstream class.

Every model forbids unknown keys and carries a ``type`` literal naming its class; the unions in
:mod:`airflow_provider_lclstream.config.streamer` discriminate on it. The reduction steps live in
``config/steps.py`` (re-exported here).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NoReturn

import numpy as np
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from airflow_provider_lclstream.config.base import ComponentModel as ComponentModel
from airflow_provider_lclstream.config.base import StrictModel as StrictModel
from airflow_provider_lclstream.config.detectors import (
    DETECTOR_SHAPES,
    SYNTHETIC_DTYPE,
    SYNTHETIC_NOISE,
    SYNTHETIC_PEAKS_PER_FRAME,
    SYNTHETIC_PEDESTAL,
    DetectorName,
)
from airflow_provider_lclstream.config.steps import STEP_KINDS as STEP_KINDS
from airflow_provider_lclstream.config.steps import STEPS as STEPS
from airflow_provider_lclstream.config.steps import BinningStep as BinningStep
from airflow_provider_lclstream.config.steps import HitFilterStep as HitFilterStep
from airflow_provider_lclstream.config.steps import RoiStep as RoiStep
from airflow_provider_lclstream.config.steps import StepConfig as StepConfig  # noqa: TC001 - pydantic
from airflow_provider_lclstream.config.steps import StepModel as StepModel
from airflow_provider_lclstream.config.steps import ThresholdStep as ThresholdStep


def _fail_at(key: str, message: str) -> NoReturn:
    """Fail a model check and name the key (below the model's own path) it is about."""
    raise PydanticCustomError("at_key", "{key}: {message}", {"key": key, "message": message})


# --------------------------------------------------------------------------- value types


def _parse_shape(value: Any) -> Any:
    """Accept ``32``, ``"32,"``, ``"4,4,4"`` and ``[4, 4]`` as a shape tuple."""
    if isinstance(value, bool):
        return value  # let pydantic reject it
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        parts = [p.strip() for p in value.strip().strip("()[]").split(",")]
        if parts and parts[-1] == "":
            parts = parts[:-1]  # "32," is a 1-d shape
        if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
            raise PydanticCustomError(
                "shape",
                "{message}",
                {
                    "message": f"{value!r} is not an array shape: expected comma-separated "
                    "integers such as '4,4,4' or '32,'"
                },
            )
        return tuple(int(p) for p in parts)
    return value


def _check_positive_dims(value: tuple[int, ...]) -> tuple[int, ...]:
    if not value or any(d < 1 for d in value):
        raise ValueError(f"array shape {value} must have at least one dimension, all >= 1")
    return value


Shape = Annotated[
    tuple[int, ...], BeforeValidator(_parse_shape), AfterValidator(_check_positive_dims)
]
"""An array shape; upstream writes it as a string (``"4,4,4"``, ``"32,"``)."""


def _check_dtype(value: str) -> str:
    try:
        np.dtype(value)
    except (TypeError, ValueError) as err:
        raise PydanticCustomError(
            "dtype",
            "{message}",
            {"message": f"{value!r} is not a numpy dtype (e.g. 'uint16', 'float32'): {err}"},
        ) from None
    return value


DType = Annotated[str, AfterValidator(_check_dtype)]
"""A dtype name, kept as written and checked with ``numpy.dtype``."""


def _split_scalar_list(value: Any) -> Any:
    """Turn upstream's ``"6,"`` / ``"6,1"`` into ``[6]`` / ``[6, 1]``."""
    if not isinstance(value, str) or "," not in value:
        return value
    parts = [p.strip() for p in value.split(",")]
    if parts and parts[-1] == "":
        parts = parts[:-1]
    out: list[int | float | str] = []
    for part in parts:
        for kind in (int, float):
            try:
                out.append(kind(part))
                break
            except ValueError:
                continue
        else:
            out.append(part)
    return out


def _str_list(value: Any) -> Any:
    """Accept a single string where a list of strings is expected."""
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_str_list)]

# --------------------------------------------------------------------------- event sources


class InternalEventSource(ComponentModel):
    """Generates events in-process (tests, development)."""

    type: Literal["InternalEventSource"] = "InternalEventSource"
    number_of_events_to_generate: int = Field(ge=0)
    events_per_second: float | None = Field(
        default=None,
        gt=0,
        description="at most this many events per second and rank (None: as fast as possible); "
        "the fault tests use it to keep a small transfer running while a service restarts",
    )


class Psana1EventSource(ComponentModel):
    """Reads LCLS-I events with psana1; ``source_identifier`` is the psana data source."""

    type: Literal["Psana1EventSource"] = "Psana1EventSource"


class PsanaKnobs(StrictModel):
    """psana2's own knobs for ``exp=..,run=..`` (smd and live modes); None: the default below.

    Defaults are chosen for low latency in live mode and are psana's own otherwise (see
    ``docs/live.md`` for the measurement behind them).
    """

    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="events an event builder sends a big-data rank at once "
        "(DataSource batch_size); default 10 live, psana's 1000 otherwise",
    )
    smd_n_events: int | None = Field(
        default=None,
        ge=1,
        description="events smd0 hands an event builder at once "
        "(PS_SMD_N_EVENTS); default 10 live, psana's 20000 otherwise",
    )
    smd_chunksize: int | None = Field(
        default=None,
        ge=4096,
        description="bytes of smalldata smd0 reads at once per stream "
        "(PS_SMD_CHUNKSIZE); default psana's 256 MiB",
    )
    file_list_stable_polls: int | None = Field(
        default=None,
        ge=1,
        description="live: equal logbook file lists (2 s apart) before "
        "reading (PS_LIVE_FILE_LIST_STABLE_POLLS); default 1, psana's 3",
    )
    max_retries: int | None = Field(
        default=None,
        ge=1,
        description="live: seconds to wait for a growing file or a missing "
        "one before giving up (PS_R_MAX_RETRIES); default psana's 60",
    )
    live_poll_s: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="live: seconds between looks for new smalldata once smd0 caught up with "
        "the writer, instead of psana's fixed 1 s sleep (LCLSTREAM_PSANA_LIVE_POLL_S); "
        "default 0.1",
    )


class Psana2EventSource(ComponentModel):
    """Reads LCLS-II events with psana2; ``source_identifier`` is the psana data source.

    ``calibration: skip`` streams without calibration constants (psana's defaults for
    ``raw.calib``/``raw.image``) and says so in every message's metadata; with ``load`` a
    constant that cannot be loaded fails the stream.
    """

    type: Literal["Psana2EventSource"] = "Psana2EventSource"
    knobs: PsanaKnobs = Field(default_factory=PsanaKnobs)
    calibration: Literal["load", "skip"] = "load"


class Hdf5EventSource(ComponentModel):
    """Replays events from HDF5 files: one event per index along axis 0 of each dataset.

    ``files`` entries may be glob patterns. ``datasets`` maps a data-source name to the dataset
    path that feeds it; empty means the engine reads the data sources' own names.
    """

    type: Literal["Hdf5EventSource"] = "Hdf5EventSource"
    files: Annotated[StrList, Field(min_length=1)]
    datasets: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- data sources


class GenericRandomNumpyArray(ComponentModel):
    """Random array of a fixed shape and dtype for every event."""

    type: Literal["GenericRandomNumpyArray"] = "GenericRandomNumpyArray"
    array_shape: Shape
    array_dtype: DType
    always_random: bool = False


class ConstValue(ComponentModel):
    """The same value (scalar or list) for every event."""

    type: Literal["ConstValue"] = "ConstValue"
    value: Annotated[bool | int | float | str | list[Any], BeforeValidator(_split_scalar_list)]
    dtype: DType | None = None

    @model_validator(mode="after")
    def _value_fits_dtype(self) -> ConstValue:
        if self.dtype is not None:
            try:
                np.asarray(self.value, dtype=self.dtype)
            except (TypeError, ValueError, OverflowError) as err:
                _fail_at("value", f"{self.value!r} cannot be stored as dtype {self.dtype!r}: {err}")
        return self


class SourceIdentifier(ComponentModel):
    """The run's ``source_identifier`` string, for every event."""

    type: Literal["SourceIdentifier"] = "SourceIdentifier"


class Psana1Timestamp(ComponentModel):
    """Event time from psana1 (float seconds)."""

    type: Literal["Psana1Timestamp"] = "Psana1Timestamp"


class Psana2Timestamp(ComponentModel):
    """Event time from psana2."""

    type: Literal["Psana2Timestamp"] = "Psana2Timestamp"


class Psana2RunInfo(ComponentModel):
    """Experiment, run start time, run number and source identifier (strings)."""

    type: Literal["Psana2RunInfo"] = "Psana2RunInfo"


class _DetectorInterface(ComponentModel):
    """Common fields of the psana detector interfaces.

    ``psana_fields`` are dotted attribute paths on the psana Detector (``raw.calib``); each is
    called with the event when callable. No fields means ``psana_name`` is an EPICS PV (it
    contains ``:``) and the detector itself is called. ``legacy_type`` records the old upstream
    class an entry was written as (``Psana1AreaDetector``...), ``None`` for current configs.
    """

    psana_name: str = Field(min_length=1)
    psana_fields: StrList = Field(default_factory=list)
    dtype: DType | None = None
    legacy_type: str | None = None

    @model_validator(mode="after")
    def _fields_or_pv(self) -> _DetectorInterface:
        if not self.psana_fields and ":" not in self.psana_name:
            _fail_at(
                "psana_fields",
                f"missing: required for detector {self.psana_name!r} "
                "(only an EPICS PV name, containing ':', may omit it)",
            )
        return self


class Psana1DetectorInterface(_DetectorInterface):
    """Any psana1 detector or PV read through ``psana.Detector``."""

    type: Literal["Psana1DetectorInterface"] = "Psana1DetectorInterface"


class Psana2DetectorInterface(_DetectorInterface):
    """Any psana2 detector or PV read through ``run.Detector``."""

    type: Literal["Psana2DetectorInterface"] = "Psana2DetectorInterface"


class SyntheticDetector(ComponentModel):
    """Deterministic fake detector frames: pedestal + Gaussian noise + Bragg-like peaks.

    Give ``detector`` (its raw shape is used) or an explicit ``shape`` (which wins). Shapes and
    defaults come from ``config/detectors.py``.
    """

    type: Literal["SyntheticDetector"] = "SyntheticDetector"
    detector: DetectorName | None = None
    shape: Shape | None = None
    dtype: DType = SYNTHETIC_DTYPE
    seed: int = 0
    pedestal: float = Field(default=SYNTHETIC_PEDESTAL, ge=0)
    noise: float = Field(default=SYNTHETIC_NOISE, ge=0)
    peaks_per_frame: int = Field(default=SYNTHETIC_PEAKS_PER_FRAME, ge=0)

    @model_validator(mode="after")
    def _has_shape(self) -> SyntheticDetector:
        if self.detector is None and self.shape is None:
            raise ValueError(
                f"give 'detector' (one of {sorted(DETECTOR_SHAPES)}) or an explicit 'shape'"
            )
        return self

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one frame."""
        if self.shape is not None:
            return self.shape
        assert self.detector is not None
        return DETECTOR_SHAPES[self.detector]


# --------------------------------------------------------------------------- pipelines


class ProcessingPipelineModel(ComponentModel):
    """Base of the pipeline classes: reduction ``steps`` run per event, before batching."""

    steps: list[StepConfig] = Field(default_factory=list)


class NoOpProcessingPipeline(ProcessingPipelineModel):
    """Pass events through one at a time (after ``steps``)."""

    type: Literal["NoOpProcessingPipeline"] = "NoOpProcessingPipeline"


class BatchProcessingPipeline(ProcessingPipelineModel):
    """Stack ``batch_size`` events along axis 0; the last batch may be short."""

    type: Literal["BatchProcessingPipeline"] = "BatchProcessingPipeline"
    batch_size: int = Field(ge=1)


PadStyle = Literal["bottom-right", "center"]
"""Where a padded image sits: ``center`` splits the padding (the extra row/column goes to the
bottom/right), ``bottom-right`` keeps the image in the top-left corner."""


class PeaknetPreprocessingPipeline(ProcessingPipelineModel):
    """Upstream's PeakNet preprocessing: pad each 2-D value, batch, add a channel axis.

    Every data source whose value is 2-D in an event is an image: it is zero-padded up to
    ``target_height`` x ``target_width`` (a side already longer is kept, as upstream does), the
    events are stacked into batches of ``batch_size``, and each ``(B, H, W)`` image batch becomes
    ``(B, num_channels, H, W)`` (the image repeated) when ``add_channel_dim`` is true. Values of
    any other rank pass through unchanged.
    """

    type: Literal["PeaknetPreprocessingPipeline"] = "PeaknetPreprocessingPipeline"
    batch_size: int = Field(ge=1)
    target_height: int = Field(ge=1)
    target_width: int = Field(ge=1)
    pad_style: PadStyle = "center"
    add_channel_dim: bool = True
    num_channels: int = Field(default=1, ge=1)


# --------------------------------------------------------------------------- serializers

Compression = Literal[
    "gzip", "gzip_with_shuffle", "bitshuffle_with_lz4", "bitshuffle_with_zstd", "zfp"
]


class HDF5BinarySerializer(ComponentModel):
    """Each batch as an in-memory HDF5 file.

    ``fields`` maps a data-source name to its dataset path; empty means every data source is
    written under its own name.
    """

    type: Literal["HDF5BinarySerializer"] = "HDF5BinarySerializer"
    fields: dict[str, str] = Field(default_factory=dict)
    compression: Compression | None = None
    compression_level: int = Field(default=3, ge=0)

    @field_validator("compression", mode="before")
    @classmethod
    def _none_string(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
            return None
        return value


SimplonFlavor = Literal["lclstreamer", "dectris-stream-v2"]


class SimplonBinarySerializer(ComponentModel):
    """Dectris Simplon 1.8 messages (for CCTBX and other Eiger-stream consumers).

    ``flavor: lclstreamer`` (default) is upstream LCLStreamer's wire form: ``c`` start, one ``m``
    image per event with the frame compressed by bitshuffle-LZ4, ``c`` stop, each a CBOR map.
    ``dectris-stream-v2`` is the DECTRIS stream-v2 style (``S`` header, uncompressed CBOR typed
    arrays). ``data_source_to_serialize`` names the image data source; upstream's psana field
    name (``jungfrau.raw.calib``) means ``detector_data``.
    """

    type: Literal["SimplonBinarySerializer"] = "SimplonBinarySerializer"
    data_source_to_serialize: str
    polarization_fraction: float = Field(ge=0, le=1)
    polarization_axis: list[float] = Field(min_length=3, max_length=3)
    data_collection_rate: str
    detector_name: str
    detector_type: str
    flavor: SimplonFlavor = "lclstreamer"


SIMPLON_REQUIRED_SOURCES: tuple[str, ...] = (
    "timestamp",
    "detector_data",
    "detector_geometry",
    "run_info",
)
"""Data sources the Simplon serializer (``flavor: lclstreamer``) reads by name, as upstream
does; ``detector_data`` stands for the image source when ``data_source_to_serialize`` is not a
data source's name. Optional: ``beam_data`` and ``photon_wavelength``."""

SIMPLON_IMAGE_KINDS = "iuf"
"""dtype kinds a Simplon image may have: signed and unsigned integers, floats."""

# --------------------------------------------------------------------------- handlers


HANDLER_QUEUE_DEFAULT = 8


class DataHandlerModel(ComponentModel):
    """Base of the handler classes: each runs on its own thread behind a queue (``queue``
    messages), or with ``queue: 0`` on the engine's thread."""

    queue: int = Field(
        default=HANDLER_QUEUE_DEFAULT,
        ge=0,
        description="messages waiting for this handler's thread at most; 0: no thread, the "
        "engine calls the handler itself",
    )


class BinaryFileWritingDataHandler(DataHandlerModel):
    """Write every serialized batch to its own file in ``write_directory``.

    It runs on its own thread behind a queue of at most ``queue`` messages (default 8), so a slow
    file system does not hold up a stream until that queue is full.
    """

    type: Literal["BinaryFileWritingDataHandler"] = "BinaryFileWritingDataHandler"
    write_directory: str = "."
    file_prefix: str = ""
    file_suffix: str = "h5"


class BinaryDataStreamingDataHandler(DataHandlerModel):
    """Send every serialized batch on a PUSH socket.

    ``role: client`` connects to ``urls``, ``server`` binds them. ``distribute`` spreads MPI
    ranks round-robin over ``urls`` instead of connecting every rank to all of them. ``buffer``
    is the OS socket send buffer in bytes for ZeroMQ (0: the OS default, capped by the OS
    maximum); NNG has no such option and ignores it.

    ``queue`` defaults to 0 here: the engine sends itself. The transport already queues
    (its high-water mark) and sends on its own I/O threads; a handler thread in front of it
    only contended with the serializer for the GIL (about 12 % of the throughput of 43 MB
    messages on the 2-core dev VM, ZeroMQ and NNG alike; docs/benchmarks.md). A blocked send
    waits in 0.2 s slices, so a rank sending still takes a SIGTERM at once.
    """

    type: Literal["BinaryDataStreamingDataHandler"] = "BinaryDataStreamingDataHandler"
    queue: int = Field(
        default=0,
        ge=0,
        description="messages waiting for a handler thread at most; 0 (the default here): no "
        "thread, the engine sends itself (the transport queues)",
    )
    urls: Annotated[StrList, Field(min_length=1)]
    role: Literal["client", "server"] = "client"
    library: Literal["zmq", "nng"] = "zmq"
    socket_type: Literal["push"] = "push"
    distribute: bool = False
    buffer: int = Field(default=0, ge=0)
