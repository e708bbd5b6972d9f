"""TransferRequest: what a user asks for (the slides' REST request), rendered to a streamer config.

A request names the data (experiment and run, or xtc2 files, or synthetic frames), how to reduce
and pack it, and where each job runs. ``to_streamer_config(input_url)`` gives the full
LCLStreamer configuration, its streaming handler pointed at the buffer's input.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airflow_provider_lclstream.config.backends import backend_info, backend_names
from airflow_provider_lclstream.config.detectors import (
    DEFAULT_DETECTOR,
    DETECTOR_SHAPES,
    detector_shape,
)
from airflow_provider_lclstream.config.streamer import StreamerConfig
from airflow_provider_lclstream.config.streamer_components import Compression, PsanaKnobs

EXPERIMENT = re.compile(r"[a-z][a-z0-9]{2,31}")
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]*")
SAFE_PATH = re.compile(r"/?[A-Za-z0-9_.+-][A-Za-z0-9_./+-]*")
#: ``addr``: where the user's own receiver listens (the buffer's output dials it).
ADDR = re.compile(r"tcp://[A-Za-z0-9][A-Za-z0-9.-]*:([0-9]{1,5})")
FIELD_OF_MODE = {"raw": "raw.raw", "calib": "raw.calib", "image": "raw.image"}
#: ``buffer_host`` values a local buffer needs no pin for (it runs on the worker's host)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
#: backend attributes a request may set (the connection's own defaults may set any)
REQUEST_ATTRIBUTES = frozenset(
    {
        "account", "partition", "qos", "constraint", "reservation", "gpus", "gpus_per_node",
        "gres", "nodes", "ntasks", "ntasks_per_node", "cpus_per_task", "mem", "mem_per_cpu",
        "time", "time_limit", "exclusive", "queue", "project", "cluster",
    }
)  # fmt: skip
ATTRIBUTE_VALUE = re.compile(r"[A-Za-z0-9_.:+,=@/-]{0,256}")
#: A job backend's name: any name in the backend registry (``config/backends.py``).
Backend = str
#: Experiment-name prefixes (the instrument) read with psana1: the LCLS-I hutches. Every other
#: instrument (tmo, rix, txi, ued, ...) is LCLS-II, read with psana2. docs/live.md has the table.
PSANA1_INSTRUMENTS = ("amo", "sxr", "xpp", "xcs", "cxi", "mec", "mfx", "det", "dia")
#: Experiments of LCLS-I instruments that psana2 test data uses (xpptut15 is psana2's tutorial).
PSANA2_EXCEPTIONS = ("xpptut15",)


def _backend_enum(schema: dict[str, Any]) -> None:
    """The schema lists the backends registered when it is built (API, docs)."""
    schema["enum"] = backend_names()


def psana_of(experiment: str) -> Literal[1, 2]:
    """``psana: auto``: 1 for an LCLS-I hutch's experiment, 2 otherwise (see the docs' table)."""
    if experiment in PSANA2_EXCEPTIONS:
        return 2
    return 1 if experiment[:3] in PSANA1_INSTRUMENTS else 2


class BackendChoice(BaseModel):
    """Where one job runs: a backend kind and the Airflow connection that configures it."""

    model_config = ConfigDict(extra="forbid")

    backend: Backend = Field(
        default="local",
        description="a registered job backend",
        json_schema_extra=_backend_enum,
    )
    conn_id: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _registered(cls, value: str) -> str:
        """Registered names only (the registry says which); unknown ones list the known ones."""
        return backend_info(value).name

    @field_validator("conn_id")
    @classmethod
    def _safe_conn(cls, value: str | None) -> str | None:
        if value is not None and not SAFE.fullmatch(value):
            raise ValueError(f"{value!r} is not a connection id (letters, digits, _ . : + -)")
        return value

    @field_validator("attributes")
    @classmethod
    def _safe_attributes(cls, value: dict[str, str]) -> dict[str, str]:
        """Scheduler options a requester may set (no ``wrap``, ``export``, ``chdir``...)."""
        for key, item in value.items():
            if key in ("nodelist", "nodes_list", "required_nodes"):
                raise ValueError(
                    f"attribute {key!r} cannot be set in a request: pin the buffer to a node "
                    "with the request's buffer_host"
                )
            if key not in REQUEST_ATTRIBUTES:
                raise ValueError(
                    f"attribute {key!r} cannot be set in a request (allowed: "
                    f"{', '.join(sorted(REQUEST_ATTRIBUTES))})"
                )
            if not ATTRIBUTE_VALUE.fullmatch(str(item)):
                raise ValueError(f"the value of attribute {key!r} is not a plain value")
        return value


class TransferRequest(BaseModel):
    """One transfer: which events, how they are packed, who receives them, where jobs run."""

    model_config = ConfigDict(extra="forbid")

    exp: str | None = Field(default=None, description="experiment, e.g. xpptut15")
    run: int | None = Field(default=None, ge=0, description="run number")
    files: list[str] = Field(default_factory=list, description="xtc2 files (instead of exp/run)")
    xtc_dir: str | None = Field(default=None, description="psana dir= for exp/run")
    synthetic: bool = Field(default=False, description="synthetic frames, no facility data")
    config: dict[str, Any] | None = Field(
        default=None, description="a full LCLStreamer config (flat or sectioned) to stream with"
    )
    access_mode: Literal["smd", "idx", "live"] = Field(
        default="smd",
        description="smd: psana's parallel smalldata mode over the run's files; live: psana2 "
        "follows a run being written until EndRun; idx: psana1's indexed mode (psana2 refuses)",
    )
    psana: Literal[1, 2, "auto"] = Field(
        default="auto", description="psana1 (LCLS-I) or psana2 (LCLS-II); auto: by instrument"
    )
    calibration: Literal["load", "skip"] = Field(
        default="load",
        description="skip: stream calib/image without calibration constants, marked in the "
        "output's metadata; load: fail when they cannot be loaded",
    )
    psana_knobs: PsanaKnobs = Field(
        default_factory=PsanaKnobs, description="psana2's batch sizes and live-mode waits"
    )
    detector_name: str = DEFAULT_DETECTOR
    mode: Literal["raw", "calib", "image"] = "raw"
    events: int | None = Field(default=None, ge=1, description="events per rank (all if unset)")
    img_per_file: int = Field(default=10, ge=1, le=10_000, description="events per message")
    compression: Compression | None = None
    compression_level: int = Field(default=3, ge=0, le=22)
    library: Literal["zmq", "nng"] = "zmq"
    ranks: int = Field(default=2, ge=1, le=4096, description="streamer MPI ranks")
    consumers: int = Field(default=1, ge=1, le=256)
    consumer_command: str | None = Field(
        default=None,
        description="raw shell command of each consumer (admins only); default "
        "lclstream-receive writing HDF5",
    )
    consumer_template: str | None = Field(
        default=None,
        description="an admin-defined consumer template ([lclstream] consumer_templates)",
    )
    consumer_params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="values of the consumer template's parameters"
    )
    output_dir: str | None = Field(default=None, description="where the default consumer writes")
    addr: str | None = Field(
        default=None,
        description="tcp://host:port where your own receiver listens (e.g. lclstream-receive "
        "--bind): the buffer pushes there and no consumer job is submitted",
    )
    buffer_host: str | None = Field(
        default=None,
        description="pin the buffer to this node (a placement constraint: SLURM --nodelist; "
        "backends that can pin a node only; 127.0.0.1 or localhost with the local backend pin "
        "nothing); unset: where the backend places it. Either way producers and consumers "
        "reach the buffer at the address its job reports",
    )
    buffers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="buffers (caches) between producers and consumers: streamer rank r sends "
        "to buffer r % buffers, consumer i reads buffer i % buffers",
    )
    buffer_ports: tuple[int, ...] | None = Field(
        default=None,
        description="input, output and metrics port of each buffer in turn (3 per buffer; free "
        "ones if unset)",
    )
    streamer: BackendChoice = Field(default_factory=BackendChoice)
    buffer: BackendChoice = Field(default_factory=BackendChoice)
    consumer: BackendChoice = Field(default_factory=BackendChoice)

    @field_validator("exp")
    @classmethod
    def _experiment(cls, value: str | None) -> str | None:
        if value is not None and not EXPERIMENT.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an experiment name (lower-case letters and digits, "
                "e.g. xpptut15)"
            )
        return value

    @field_validator("detector_name")
    @classmethod
    def _detector(cls, value: str) -> str:
        if not SAFE.fullmatch(value):
            raise ValueError(f"{value!r} is not a detector name (letters, digits, _ . : + -)")
        return value

    @field_validator("files")
    @classmethod
    def _files(cls, value: list[str]) -> list[str]:
        for path in value:
            if not SAFE_PATH.fullmatch(path) or ".." in path.split("/"):
                raise ValueError(f"{path!r} is not a plain file path (no spaces or shell syntax)")
        return value

    @field_validator("consumer_template")
    @classmethod
    def _template_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,63}", value):
            raise ValueError(f"{value!r} is not a consumer template name")
        return value

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = ADDR.fullmatch(value)
        if not match or not 0 < int(match.group(1)) < 65536:
            raise ValueError(
                f"{value!r} is not a receiver address: give tcp://host:port (port 1-65535) "
                "where your receiver listens"
            )
        return value

    @field_validator("buffer_host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", value):
            raise ValueError(f"{value!r} is not a host name")
        return value

    @model_validator(mode="after")
    def _buffers_fit(self) -> TransferRequest:
        if self.buffer_ports is not None:
            if len(self.buffer_ports) != 3 * self.buffers:
                raise ValueError(
                    f"buffer_ports has {len(self.buffer_ports)} ports; {self.buffers} buffer(s) "
                    f"need {3 * self.buffers} (input, output and metrics port of each)"
                )
            bad = [p for p in self.buffer_ports if not 0 < p < 65536]
            if bad:
                raise ValueError(f"buffer_ports {bad} are not ports (1-65535)")
        if self.buffers == 1:
            return self
        if self.buffers > self.ranks:
            raise ValueError(
                f"buffers={self.buffers} with ranks={self.ranks}: every buffer needs a streamer "
                "rank (rank r sends to buffer r % buffers); give at most as many buffers as ranks"
            )
        if self.addr is not None:
            raise ValueError("addr sends to one receiver: it takes one buffer (buffers: 1)")
        if self.buffers > self.consumers:
            raise ValueError(
                f"buffers={self.buffers} with consumers={self.consumers}: every buffer needs a "
                "consumer (consumer i reads buffer i % buffers); give at least as many consumers"
            )
        return self

    @property
    def buffer_pin(self) -> str | None:
        """The node the buffer job is pinned to: ``buffer_host``, except the loopback names a
        local buffer runs on anyway (requests from before ``buffer_host`` became a pin)."""
        if self.buffer.backend == "local" and self.buffer_host in LOOPBACK_HOSTS:
            return None
        return self.buffer_host

    @model_validator(mode="after")
    def _pin_needs_a_pinning_backend(self) -> TransferRequest:
        if self.buffer_pin is None:
            return self
        info = backend_info(self.buffer.backend)
        if not info.pins_node:
            pinning = [name for name in backend_names() if backend_info(name).pins_node]
            raise ValueError(
                f"buffer_host {self.buffer_host!r} pins the buffer to a node, but the buffer's "
                f"backend {info.name!r} cannot place a job on a named node: drop buffer_host "
                f"(the buffer's address comes from its job) or run the buffer with one of "
                f"{', '.join(pinning)}"
            )
        return self

    @field_validator("config")
    @classmethod
    def _config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from airflow_provider_lclstream.config.loader import validate_streamer_config

            validate_streamer_config(value)  # ConfigError names the path inside the config
        return value

    @field_validator("xtc_dir", "output_dir")
    @classmethod
    def _directory(cls, value: str | None) -> str | None:
        if value is not None and not SAFE_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not a plain directory path (no spaces or shell syntax)")
        return value

    @model_validator(mode="after")
    def _addr_has_no_consumers(self) -> TransferRequest:
        if self.addr is None:
            return self
        given = [k for k in ("consumer_command", "consumer_template") if getattr(self, k)]
        if "consumers" in self.model_fields_set and self.consumers != 1:
            given.append("consumers")
        if given:
            raise ValueError(
                f"addr sends the data to your own receiver at {self.addr}: no consumer job runs, "
                f"so {', '.join(given)} cannot be given with it"
            )
        return self

    @model_validator(mode="after")
    def _one_data_source(self) -> TransferRequest:
        chosen = [bool(self.files), self.exp is not None, self.synthetic, self.config is not None]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of: exp and run, files, synthetic: true, or config")
        if self.exp is not None and self.run is None:
            raise ValueError("run is required with exp")
        if self.exp is None and self.access_mode != "smd":
            raise ValueError(
                f"access_mode {self.access_mode!r} needs exp and run (files= are read as given)"
            )
        if self.exp is not None:
            version = self.psana_version
            if version == 2 and self.access_mode == "idx":
                raise ValueError(
                    "access_mode 'idx' is psana1's indexed mode; psana2 has no idx mode: use "
                    "'smd' (parallel smalldata) or 'live', or psana: 1 for an LCLS-I experiment"
                )
            if version == 1 and self.access_mode == "live":
                raise ValueError("access_mode 'live' is psana2's live mode: set psana: 2")
        return self

    @property
    def psana_version(self) -> Literal[1, 2]:
        """The psana that reads ``exp``: the request's ``psana``, or by instrument (auto)."""
        if self.psana != "auto":
            return self.psana
        return psana_of(self.exp or "")

    @property
    def source_identifier(self) -> str:
        if self.config is not None:
            return str(self.config.get("source_identifier", "config"))
        if self.synthetic:
            return f"synthetic:{self.detector_name}"
        if self.files:
            return "files=" + ";".join(self.files)
        if self.psana_version == 1:  # psana1's own syntax
            return f"exp={self.exp}:run={self.run}:{self.access_mode}" + (
                f":dir={self.xtc_dir}" if self.xtc_dir else ""
            )
        ident = f"exp={self.exp},run={self.run}"
        ident += f",dir={self.xtc_dir}" if self.xtc_dir else ""
        return ident + (",live=1" if self.access_mode == "live" else "")

    @property
    def label(self) -> str:
        """A short, shell-safe name for jobs and files: ``xpptut15-r0670`` or ``synthetic``."""
        if self.exp is not None:
            return f"{self.exp}-r{self.run:04d}"
        if self.config is not None:
            return "config"
        return "synthetic" if self.synthetic else "files"

    def to_streamer_config(self, url: str | list[str], *, role: str = "client") -> StreamerConfig:
        """The full LCLStreamer config, streaming to ``url`` (a buffer's input).

        Several URLs (one per buffer) are distributed: rank r sends to ``url[r % len(url)]``.
        With ``config``, the user's config is used and its streaming handlers are pointed at
        ``url`` (one is added when it has none).
        """
        urls = [url] if isinstance(url, str) else list(url)
        if self.config is not None:
            return repoint(self.config, urls, self.library, role)
        data_sources: dict[str, Any]
        if self.synthetic:
            synthetic: dict[str, Any] = {"type": "SyntheticDetector"}
            if detector_shape(self.detector_name) is not None:
                synthetic["detector"] = self.detector_name
            else:
                synthetic["shape"] = list(DETECTOR_SHAPES[DEFAULT_DETECTOR])
            event_source: dict[str, Any] = {
                "type": "InternalEventSource",
                "number_of_events_to_generate": self.events or 100,
            }
            data_sources = {"detector_data": synthetic, "run_info": {"type": "SourceIdentifier"}}
            fields = {"detector_data": "/data/data"}
        elif self.exp is not None and self.psana_version == 1:
            event_source = {"type": "Psana1EventSource"}
            data_sources = {
                "timestamp": {"type": "Psana1Timestamp"},
                "detector_data": {
                    "type": "Psana1DetectorInterface",
                    "psana_name": self.detector_name,
                    "psana_fields": self.mode,  # psana1: det.raw(evt), det.calib(evt), ...
                },
            }
            fields = {"detector_data": "/data/data", "timestamp": "/data/timestamp"}
        else:
            event_source = {
                "type": "Psana2EventSource",
                "calibration": self.calibration,
                "knobs": self.psana_knobs.model_dump(exclude_none=True),
            }
            data_sources = {
                "timestamp": {"type": "Psana2Timestamp"},
                "detector_data": {
                    "type": "Psana2DetectorInterface",
                    "psana_name": self.detector_name,
                    "psana_fields": FIELD_OF_MODE[self.mode],
                },
                "run_info": {"type": "Psana2RunInfo"},
            }
            fields = {"detector_data": "/data/data", "timestamp": "/data/timestamp"}
        return StreamerConfig.model_validate(
            {
                "source_identifier": self.source_identifier,
                "skip_incomplete_events": True,
                "event_source": event_source,
                "data_sources": data_sources,
                "processing_pipeline": {
                    "type": "BatchProcessingPipeline",
                    "batch_size": self.img_per_file,
                },
                "data_serializer": {
                    "type": "HDF5BinarySerializer",
                    "fields": fields,
                    "compression": self.compression,
                    "compression_level": self.compression_level,
                },
                "data_handlers": [
                    {
                        "type": "BinaryDataStreamingDataHandler",
                        "urls": urls,
                        "library": self.library,
                        "role": role,
                        "distribute": len(urls) > 1,
                    }
                ],
            }
        )


def repoint(
    document: dict[str, Any], url: str | list[str], library: str, role: str
) -> StreamerConfig:
    """A user's config with every streaming handler sending to ``url`` (files stay as they are);
    several URLs are distributed over the ranks (rank r -> ``url[r % len(url)]``)."""
    urls = [url] if isinstance(url, str) else list(url)
    from airflow_provider_lclstream.config.loader import dump_flat, validate_streamer_config

    flat = dump_flat(validate_streamer_config(document))
    handlers = [h for h in flat["data_handlers"] if h["type"] != "BinaryDataStreamingDataHandler"]
    streaming = [h for h in flat["data_handlers"] if h["type"] == "BinaryDataStreamingDataHandler"]
    base = streaming[0] if streaming else {"type": "BinaryDataStreamingDataHandler"}
    handlers.append(
        {**base, "urls": urls, "role": role, "library": library, "distribute": len(urls) > 1}
    )
    flat["data_handlers"] = handlers
    return validate_streamer_config(flat)
