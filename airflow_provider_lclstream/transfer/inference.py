"""The ``lclstream-infer`` consumer of a transfer: its settings, its command line, its summary.

``lclstream_peaknet_inference`` (the DAG) takes a transfer request as ``lclstream_transfer``
does and replaces the consumer with one ``lclstream-infer`` job built here from
:class:`InferenceParams`. Nothing a requester types reaches a shell unquoted: paths must be
plain paths and every argument is quoted.

Where Ray runs (``ray``):

- ``local``: ``lclstream-infer`` starts a Ray on the consumer's node (the default).
- ``address``: it joins an existing cluster at ``ray_address``.
- ``slurm``: the consumer job is a SLURM allocation; its script starts the Ray head on the first
  node and a worker on every other node with ``srun``, then runs ``lclstream-infer`` against it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from airflow_provider_lclstream.config.job import shell_join
from airflow_provider_lclstream.config.transfer import SAFE_PATH, TransferRequest
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.transfer.jobs import tool
from airflow_provider_lclstream.transfer.request import InvalidTransferRequest

#: the Ray head's port inside a SLURM allocation (``ray: slurm``)
RAY_PORT = 6379
SUMMARY = "summary.json"
ADDRESS = re.compile(r"[A-Za-z0-9_.-]+:[0-9]{1,5}|auto")


class InferenceSummaryError(LCLStreamError):
    """The inference consumer's summary is missing, says the run failed, or disagrees with the
    buffer's count; the message says which and where the file is."""


class InferenceParams(BaseModel):
    """The consumer settings of ``lclstream_peaknet_inference`` (its params, or the run conf)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="PeakNet weights (.safetensors or a torch file)")
    model_config_path: str | None = Field(
        default=None, alias="model_config", description="PeakNet model config (YAML/JSON)"
    )
    height: int = Field(default=512, ge=1, le=16384)
    width: int = Field(default=512, ge=1, le=16384)
    batch_size: int = Field(default=8, ge=1, le=4096)
    readers: int = Field(default=2, ge=1, le=256)
    p_actors: int | None = Field(default=None, ge=1, le=1024)
    writers: int = Field(default=1, ge=1, le=64)
    q1_size: int = Field(default=8, ge=1, le=4096)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    min_peaks: int = Field(default=10, ge=0)
    events_per_file: int = Field(default=1000, ge=1)
    save_frames: bool = False
    all_events: bool = False
    keep_logits: bool = False
    timeout_s: float = Field(default=600.0, gt=0, le=86400)
    max_restarts: int = Field(default=2, ge=0, le=100)
    ray: Literal["local", "address", "slurm"] = "local"
    ray_address: str | None = None

    @field_validator("checkpoint", "model_config_path")
    @classmethod
    def _plain_path(cls, value: str | None) -> str | None:
        if value is not None and (not SAFE_PATH.fullmatch(value) or ".." in value.split("/")):
            raise ValueError(f"{value!r} is not a plain file path (no spaces or shell syntax)")
        return value

    @model_validator(mode="after")
    def _address(self) -> InferenceParams:
        if self.ray == "address":
            if not self.ray_address or not ADDRESS.fullmatch(self.ray_address):
                raise ValueError("ray: address needs ray_address as HOST:PORT (or auto)")
        elif self.ray_address:
            raise ValueError(f"ray_address is only used with ray: address (ray is {self.ray!r})")
        return self


def output_directory(request: TransferRequest, run_id: str) -> Path:
    """Where one run's CXI files and summary go: ``OUTPUT_DIR/LABEL/peaknet-RUN_ID``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    return Path(request.output_dir or "lclstream-output") / request.label / f"peaknet-{safe}"


def infer_arguments(params: InferenceParams, out: Path, *, bin_dir: str | None = None) -> list[str]:
    """``lclstream-infer`` and its options (the URL and transport come from the job's env)."""
    args = [
        tool("lclstream-infer", bin_dir),
        "--url", "$LCLSTREAM_URL",
        "--transport", "$LCLSTREAM_TRANSPORT",
        "--checkpoint", params.checkpoint,
        "--out", str(out),
        "--summary", str(out / SUMMARY),
        "--height", str(params.height),
        "--width", str(params.width),
        "--batch-size", str(params.batch_size),
        "--readers", str(params.readers),
        "--writers", str(params.writers),
        "--q1-size", str(params.q1_size),
        "--device", params.device,
        "--min-peaks", str(params.min_peaks),
        "--events-per-file", str(params.events_per_file),
        "--timeout", f"{params.timeout_s:g}",
        "--max-restarts", str(params.max_restarts),
    ]  # fmt: skip
    if params.model_config_path:
        args += ["--model-config", params.model_config_path]
    if params.p_actors:
        args += ["--p-actors", str(params.p_actors)]
    args += [f"--{flag.replace('_', '-')}" for flag in ("save_frames", "all_events", "keep_logits")
             if getattr(params, flag)]  # fmt: skip
    if params.ray == "address":
        args += ["--address", str(params.ray_address)]
    return args


def _line(args: list[str]) -> str:
    """Quote every argument, leaving ``$LCLSTREAM_URL`` / ``$LCLSTREAM_TRANSPORT`` to expand."""
    line = shell_join(args)
    for name in ("LCLSTREAM_URL", "LCLSTREAM_TRANSPORT"):
        line = line.replace(f"'${name}'", f'"${name}"')
    return line


def consumer_command(params: InferenceParams, out: Path, *, bin_dir: str | None = None) -> str:
    """The consumer job's shell lines (``consumer_job`` runs them under ``set -euo pipefail``)."""
    infer = infer_arguments(params, out, bin_dir=bin_dir)
    mkdir = shell_join(["mkdir", "-p", str(out)])
    if params.ray != "slurm":
        return f"{mkdir}\n{_line(infer)}"
    ray = shell_join([tool("ray", bin_dir)])
    return "\n".join(
        [
            mkdir,
            "# A Ray cluster over this SLURM allocation: the head on the first node, a worker on",
            "# every other node (each `ray start --block` is one srun step), then the pipeline.",
            'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f"address=$head:{RAY_PORT}",
            f'srun --nodes=1 --ntasks=1 -w "$head" {ray} start --head --port={RAY_PORT} --block &',
            "for _ in $(seq 60); do",
            f'  {ray} status --address "$address" >/dev/null 2>&1 && break; sleep 2',
            "done",
            f'{ray} status --address "$address" >/dev/null  # fail here if the head never came up',
            "workers=$(( ${SLURM_JOB_NUM_NODES:-1} - 1 ))",
            'if [ "$workers" -gt 0 ]; then',
            f'  srun --nodes="$workers" --ntasks="$workers" -x "$head" {ray} start '
            '--address="$address" --block &',
            "fi",
            _line(infer) + ' --address "$address"',
        ]
    )


#: DAG params that are job attributes of the consumer (a GPU partition for PeakNet)
ATTRIBUTE_PARAMS = {"gpu_partition": "partition", "gpus_per_node": "gpus_per_node",
                    "nodes": "nodes"}  # fmt: skip


def inference_request(
    request: dict[str, Any], params: dict[str, Any], run_id: str, *, bin_dir: str | None = None
) -> dict[str, Any]:
    """A validated transfer request with one ``lclstream-infer`` consumer built from ``params``.

    ``params`` holds :class:`InferenceParams` fields (others are ignored) and optionally
    ``gpu_partition``, ``gpus_per_node`` and ``nodes`` for the consumer job. A request that
    names its own consumer is refused: this consumer is the inference.
    """
    transfer = TransferRequest.model_validate(request)
    for field in ("consumer_command", "consumer_template"):
        if getattr(transfer, field):
            raise InvalidTransferRequest(
                f"{field}: this DAG's consumer is lclstream-infer; set its params (checkpoint, "
                "model_config, ...) instead, or use lclstream_transfer for another consumer"
            )
    fields = {f.alias or name for name, f in InferenceParams.model_fields.items()}
    values = {k: v for k, v in params.items() if k in fields and v not in (None, "")}
    if "checkpoint" not in values:
        raise InvalidTransferRequest("checkpoint: required (a .safetensors or torch file)")
    try:
        inference = InferenceParams.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in err.errors()
        )
        raise InvalidTransferRequest(f"invalid inference params: {problems}") from None
    attributes = dict(transfer.consumer.attributes)
    for param, attribute in ATTRIBUTE_PARAMS.items():
        if params.get(param) not in (None, "", 0):
            attributes[attribute] = str(params[param])
    out = output_directory(transfer, run_id)
    consumer = transfer.consumer.model_copy(update={"attributes": attributes})
    try:
        consumer = type(consumer).model_validate(consumer.model_dump())
    except ValidationError as err:
        raise InvalidTransferRequest(f"consumer attributes: {err.errors()[0]['msg']}") from None
    command = consumer_command(inference, out, bin_dir=bin_dir)
    return transfer.model_copy(
        update={"consumers": 1, "consumer_command": command, "consumer": consumer}
    ).model_dump(mode="json")


def read_summary(out: Path) -> dict[str, Any]:
    """The summary ``lclstream-infer`` wrote to ``out``; raise naming the file when absent."""
    path = out / SUMMARY
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise InferenceSummaryError(
            f"{path}: no summary; the lclstream-infer job did not finish (see its log in "
            "wait_consumers)"
        ) from None
    except ValueError as err:
        raise InferenceSummaryError(f"{path}: not a summary document: {err}") from None


def check_summary(summary: dict[str, Any], buffer_events: int | None, where: Path) -> None:
    """Fail unless the run is ok and every event the buffer delivered went through the model
    (frames in = frames inferred = the buffer's event count)."""
    if not summary.get("ok"):
        raise InferenceSummaryError(
            f"{where}: the inference run failed: {summary.get('error')}; lost: "
            f"{summary.get('lost') or 'nothing listed'}"
        )
    frames_in, inferred = summary.get("frames_in"), summary.get("frames_inferred")
    if frames_in != inferred or (buffer_events is not None and frames_in != buffer_events):
        raise InferenceSummaryError(
            f"{where}: frames do not add up: the buffer delivered {buffer_events} events, the "
            f"readers got {frames_in}, the model inferred {inferred}"
        )


__all__ = [
    "InferenceParams",
    "inference_request",
    "InferenceSummaryError",
    "check_summary",
    "consumer_command",
    "infer_arguments",
    "output_directory",
    "read_summary",
]
