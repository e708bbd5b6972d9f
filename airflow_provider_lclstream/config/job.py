"""The job spec every backend takes, with helpers that keep user values out of shell syntax.

``JobSpec`` uses psik's field names and defaults (psik 3.x ``psik.JobSpec``), so a spec can be
passed to psik unchanged (:meth:`JobSpec.to_psik`) and read from the same JSON/YAML files.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from airflow_provider_lclstream.exceptions import UnsafeNameError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "JobSpec",
    "ResourceSpec",
    "check_name",
    "job_name_for",
    "shell_join",
    "shell_quote",
]

_ATTRIBUTE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]")


class ResourceSpec(BaseModel):
    """What a job needs; ``duration`` is the walltime limit in minutes (psik's default: 10)."""

    model_config = ConfigDict(extra="forbid")

    duration: int = Field(default=10, ge=1, description="max walltime in minutes")
    node_count: int | None = None
    process_count: int | None = None
    processes_per_node: int | None = None
    cpu_cores_per_process: int = 1
    gpu_cores_per_process: int = 0
    exclusive_node_use: bool = True


class JobSpec(BaseModel):
    """A batch job: a shell (or shebang) script, where and how it runs.

    ``backend`` and ``attributes`` are passed to the backend as-is (psik: a configured backend
    name; SLURM-like backends read ``attributes`` such as ``account`` or ``qos``).
    ``cb_secret`` is never written out in clear by ``model_dump_json``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    directory: str | None = None
    script: str
    environment: dict[str, str] = Field(default_factory=dict)
    inherit_environment: bool = True
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    backend: str = "default"
    attributes: dict[str, str] = Field(default_factory=dict)
    callback: str | None = None
    cb_headers: dict[str, str] = Field(default_factory=dict)
    cb_secret: SecretStr | None = None

    @field_validator("attributes", "environment")
    @classmethod
    def _one_line_entries(cls, value: dict[str, str]) -> dict[str, str]:
        """Keys are names and values single lines: backends write them into batch scripts."""
        for key, item in value.items():
            if not _ATTRIBUTE_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not a valid name (letters, digits, _ - .)")
            if "\n" in str(item) or "\r" in str(item):
                raise ValueError(f"the value of {key!r} spans several lines")
        return value

    def to_psik(self) -> Any:
        """The same spec as a ``psik.JobSpec`` (needs the ``psik`` extra)."""
        try:
            import psik
        except ImportError as err:
            from airflow_provider_lclstream.exceptions import MissingDependencyError

            raise MissingDependencyError("psik", "psik", "the psik job backend") from err
        data = self.model_dump(exclude={"cb_secret"})
        if self.cb_secret is not None:
            data["cb_secret"] = self.cb_secret.get_secret_value()
        return psik.JobSpec.model_validate(data)


def check_name(value: str, what: str = "name", max_length: int = 128) -> str:
    """Return ``value`` if it is a plain name (letters, digits, ``._+-``), else raise.

    Use it for experiment names, run numbers, job names: anything that reaches a shell script,
    a path or a scheduler's command line.
    """
    if not isinstance(value, str) or not value:
        raise UnsafeNameError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > max_length:
        raise UnsafeNameError(f"{what} {value!r} is longer than {max_length} characters")
    if not _SAFE_NAME.fullmatch(value):
        bad = sorted(set(_UNSAFE_CHARS.findall(value)))
        shown = " ".join(repr(c) for c in bad) or repr(value[0])
        raise UnsafeNameError(
            f"{what} {value!r} contains characters not allowed in names ({shown}); "
            "use letters, digits, '.', '_', '+' and '-' (and do not start with a symbol)"
        )
    return value


def shell_quote(value: object) -> str:
    """Quote one value for a POSIX shell (``shlex.quote`` of ``str(value)``)."""
    return shlex.quote(str(value))


def shell_join(args: Iterable[object]) -> str:
    """A shell command line from arguments, each quoted."""
    return " ".join(shell_quote(a) for a in args)


def job_name_for(
    dag_id: str, run_id: str, task_id: str, map_index: int = -1, prefix: str | None = None
) -> str:
    """A job name that is the same for every try of one task instance and unique across them.

    ``prefix`` (default: the task id) is made name-safe and cut to 40 characters; a digest of
    (dag_id, run_id, task_id, map_index) follows, so retries find the job they submitted.
    """
    digest = hashlib.sha256(f"{dag_id}\0{run_id}\0{task_id}\0{map_index}".encode()).hexdigest()
    base = _UNSAFE_CHARS.sub("-", prefix or task_id).strip("-._+")[:40] or "job"
    if not base[0].isalnum():
        base = "j" + base
    return f"{base}-{digest[:12]}"
