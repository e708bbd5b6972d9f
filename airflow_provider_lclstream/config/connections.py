"""The ``lclstream_*`` connection types: one settings model each, and their form definitions.

Each model names the connection fields it reads (``fields``: form field -> setting) and
describes every setting (``Field(title=..., description=...)``). Everything else is derived
from the models: the hooks parse connections into them, ``get_provider_info`` declares
``conn-fields`` (the settings read from the extra JSON) and ``ui-field-behaviour`` (labels of the
mapped form fields, the unused ones hidden), and the generated docs render their tables. No
Airflow import here: Airflow's ProvidersManager reads this through ``get_provider_info``.
"""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_core import PydanticUndefined

from airflow_provider_lclstream.exceptions import IncompleteConnectionError

#: The form fields every Airflow connection has besides ``extra`` (``schema`` is the URL path).
STANDARD_FIELDS = ("host", "schema", "login", "password", "port")
#: Default ``job_defaults`` example text, shared by the batch backends.
_JOB_DEFAULTS = "job options applied to every job of this connection (a job's own win)"


class ConnectionSettings(BaseModel):
    """Settings of one connection type, parsed from a connection (all missing keys at once)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    conn_type: ClassVar[str]
    #: the hook class serving this type, relative to ``airflow_provider_lclstream.hooks``
    hook: ClassVar[str]
    hook_name: ClassVar[str]
    #: connection form field -> settings key
    fields: ClassVar[dict[str, str]] = {}
    #: settings that must be set (``from_values`` reports all missing ones)
    required: ClassVar[tuple[str, ...]] = ()
    #: placeholders of form fields (``host``, ``extra``, ...), shown greyed in the empty form
    placeholders: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_values(cls, values: dict[str, Any], conn_id: str | None) -> Self:
        missing = [k for k in cls.required if values.get(k) in (None, "")]
        if missing:
            raise IncompleteConnectionError(conn_id, cls.conn_type, missing)
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()
            )
            raise ValueError(f"connection {conn_id!r} ({cls.conn_type}): {problems}") from None

    @classmethod
    def extra_keys(cls) -> tuple[str, ...]:
        """Settings read from the extra JSON only (the ``conn-fields`` of the form)."""
        mapped = set(cls.fields.values())
        return tuple(k for k in cls.model_fields if k not in mapped)


class BackendSettings(ConnectionSettings):
    """Settings of one job backend; ``backend_kwargs()`` builds it."""

    backend: ClassVar[str]

    def backend_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class LocalSettings(BackendSettings):
    """Jobs as processes on the Airflow worker's own host; works without a connection."""

    backend = "local"
    conn_type = "lclstream_local"
    hook = "job_backend.JobBackendHook"
    hook_name = "LCLStream local jobs"
    root: str | None = Field(
        default=None,
        title="Job directory",
        description="root of the job directories; unset: [lclstream] jobs_dir",
    )
    kill_grace: float = Field(
        default=10.0,
        title="Kill grace (s)",
        description="seconds between SIGTERM and SIGKILL on cancel",
    )


class SlurmSettings(BackendSettings):
    """SLURM through its REST API (slurmrestd)."""

    backend = "slurm"
    conn_type = "lclstream_slurm"
    hook = "job_backend.SlurmJobHook"
    hook_name = "LCLStream SLURM (slurmrestd)"
    fields = {"host": "url", "login": "user", "password": "token"}
    required = ("url",)
    placeholders = {"host": "http://slurm:6820"}
    url: str = Field(title="slurmrestd URL", description="slurmrestd base URL")
    user: str | None = Field(
        default=None, title="User", description="SLURM user the jobs run as (X-SLURM-USER-NAME)"
    )
    token: SecretStr | None = Field(
        default=None, title="JWT", description="SLURM JWT; unset: minted with `scontrol token`"
    )
    api_version: str | None = Field(
        default=None,
        title="API version",
        description="slurmrestd API version (v0.0.43); unset: the newest the server answers",
    )
    verify: bool | str = Field(
        default=True,
        title="Verify TLS",
        description="verify the server certificate, or a CA bundle path",
    )
    job_defaults: dict[str, Any] = Field(
        default={}, title="Job defaults", description=f"slurmrestd job fields: {_JOB_DEFAULTS}"
    )


class SlurmCliSettings(BackendSettings):
    """SLURM through sbatch/squeue/sacct/scancel, on this host or over SSH."""

    backend = "slurm_cli"
    conn_type = "lclstream_slurm_cli"
    hook = "job_backend.SlurmCliJobHook"
    hook_name = "LCLStream SLURM (command line)"
    ssh_conn_id: str | None = Field(
        default=None,
        title="SSH connection",
        description="an SSH connection to a login node; unset: run the commands here",
    )
    job_defaults: dict[str, Any] = Field(
        default={}, title="Job defaults", description=f"sbatch long options: {_JOB_DEFAULTS}"
    )
    accounting: Literal["auto", "sacct", "jobcomp", "none"] = Field(
        default="auto",
        title="Accounting",
        description="where ended jobs are looked up: sacct, the jobcomp file, none, or auto",
    )
    bin_dir: str | None = Field(
        default=None, title="SLURM bin directory", description="directory of the SLURM commands"
    )


class SfapiSettings(BackendSettings):
    """NERSC's Superfacility API (needs the `sfapi` extra)."""

    backend = "sfapi"
    conn_type = "lclstream_sfapi"
    hook = "job_backend.SfapiJobHook"
    hook_name = "LCLStream NERSC SF API"
    fields = {"host": "api_base_url", "login": "client_id", "password": "private_key"}
    required = ("client_id", "private_key")
    placeholders = {"host": "https://api.nersc.gov/api/v1.2"}
    client_id: str = Field(title="Client id", description="SF API client id")
    private_key: SecretStr = Field(
        title="Private key (PEM or JWK)", description="the client's private key"
    )
    machine: str = Field(
        default="perlmutter", title="Machine", description="NERSC system to submit to"
    )
    api_base_url: str | None = Field(
        default=None,
        title="API base URL (optional)",
        description="unset: the sfapi client's default",
    )
    token_url: str | None = Field(
        default=None,
        title="Token URL",
        description="OAuth token endpoint; unset: the client's default",
    )
    user: str | None = Field(default=None, title="User", description="NERSC user the jobs run as")
    job_defaults: dict[str, Any] = Field(
        default={},
        title="Job defaults",
        description=f"sbatch long options (account, qos, constraint): {_JOB_DEFAULTS}",
    )


class PsikSettings(BackendSettings):
    """psik's job manager (needs the `psik` extra); set `prefix` or `config`."""

    backend = "psik"
    conn_type = "lclstream_psik"
    hook = "job_backend.PsikJobHook"
    hook_name = "LCLStream psik"
    prefix: str | None = Field(default=None, title="Job directory", description="psik's job prefix")
    config: str | None = Field(
        default=None, title="psik.json", description="path of a psik.json (instead of prefix)"
    )
    backend_type: str = Field(
        default="local", title="psik backend", description="psik backend type (local, slurm, ...)"
    )


class S3mSettings(BackendSettings):
    """OLCF's S3M SLURM proxy."""

    backend = "s3m"
    conn_type = "lclstream_s3m"
    hook = "job_backend.S3mJobHook"
    hook_name = "LCLStream S3M"
    fields = {"host": "base_url", "password": "token"}
    required = ("base_url", "token", "resource")
    placeholders = {"host": "https://s3m.olcf.ornl.gov"}
    base_url: str = Field(title="S3M base URL", description="S3M base URL")
    token: SecretStr = Field(title="Token", description="S3M token")
    resource: str = Field(title="Resource", description="the cluster's S3M resource name")
    api_version: str = Field(
        default="v0.0.43", title="API version", description="slurmrestd API version"
    )
    verify: bool | str = Field(
        default=True,
        title="Verify TLS",
        description="verify the server certificate, or a CA bundle path",
    )
    job_defaults: dict[str, Any] = Field(
        default={}, title="Job defaults", description=f"slurmrestd job fields: {_JOB_DEFAULTS}"
    )


class ElogSettings(ConnectionSettings):
    """The LCLS Elog: ARP job counters and run parameters. Unknown extra keys are refused.

    Without a connection the hook reads `JID_UPDATE_COUNTERS` and `Authorization` from the
    environment, as ARP sets them. A host without a scheme gets the schema field (else `https`).
    """

    conn_type = "lclstream_elog"
    hook = "elog.ElogHook"
    hook_name = "LCLStream Elog (ARP counters)"
    fields = {"host": "base_url", "password": "authorization"}
    placeholders = {"host": "https://pswww.slac.stanford.edu/ws-auth/lgbk"}
    base_url: str | None = Field(
        default=None, title="Logbook URL", description="logbook base URL (for run parameters)"
    )
    authorization: SecretStr | None = Field(
        default=None, title="Authorization header", description="the `Authorization` header value"
    )
    counters_url: str | None = Field(
        default=None,
        title="Counters URL",
        description="ARP's counters URL (`JID_UPDATE_COUNTERS`) of one job",
    )
    verify: bool | str = Field(
        default=True,
        title="Verify TLS",
        description="verify the server certificate, or a CA bundle path",
    )
    timeout: float = Field(default=10.0, title="Timeout (s)", description="HTTP timeout in seconds")
    run_params_template: str | None = Field(
        default=None,
        title="Run parameters URL template",
        description="`{base}`, `{experiment}`, `{run}` fill it; unset: the logbook's "
        "`add_run_params` service",
    )


class KafkaSettings(ConnectionSettings):
    """Kafka brokers of the Elog run events, with their SASL/TLS settings and secrets.

    Used by ``lclstream_on_run_start`` (``[lclstream] kafka_conn_id``) and
    ``ElogRunEventTrigger(kafka_conn_id=...)``; the secrets stay in the connection: the trigger
    serializes only the connection id.
    """

    conn_type = "lclstream_kafka"
    hook = "kafka.KafkaHook"
    hook_name = "LCLStream Kafka (Elog run events)"
    fields = {"host": "bootstrap_servers", "login": "sasl_username", "password": "sasl_password"}
    required = ("bootstrap_servers",)
    placeholders = {"host": "kafka1:9093,kafka2:9093"}
    bootstrap_servers: str = Field(
        title="Bootstrap servers", description="`host:port` of the brokers, comma-separated"
    )
    sasl_username: str | None = Field(default=None, title="SASL user", description="SASL user")
    sasl_password: SecretStr | None = Field(
        default=None, title="SASL password", description="SASL password"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        title="Security protocol",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", title="SASL mechanism", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    ssl_cafile: str | None = Field(
        default=None, title="CA file", description="CA bundle that signed the brokers' certificates"
    )
    ssl_check_hostname: bool = Field(
        default=True, title="Check host name", description="check the brokers' host names (TLS)"
    )
    consumer_config: dict[str, Any] = Field(
        default={},
        title="Consumer settings",
        description="more `KafkaConsumer` settings (kafka-python names), e.g. `client_id`",
    )

    def kafka_config(self) -> dict[str, Any]:
        """``KafkaConsumer`` keyword arguments, secrets included (never log them)."""
        config: dict[str, Any] = {
            **self.consumer_config,
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",") if s],
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol.endswith("SSL"):
            config["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_cafile:
                config["ssl_cafile"] = self.ssl_cafile
        return config


BACKEND_SETTINGS: dict[str, type[BackendSettings]] = {
    s.conn_type: s
    for s in (
        LocalSettings,
        SlurmSettings,
        SlurmCliSettings,
        SfapiSettings,
        PsikSettings,
        S3mSettings,
    )
}
#: every ``lclstream_*`` connection type, in the order the docs list them
CONNECTION_SETTINGS: dict[str, type[ConnectionSettings]] = {
    **BACKEND_SETTINGS,
    ElogSettings.conn_type: ElogSettings,
    KafkaSettings.conn_type: KafkaSettings,
}


# --------------------------------------------------------------------------- form definitions

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    SecretStr: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    dict: "object",
    list: "array",
    type(None): "null",
}


def json_schema(annotation: Any) -> dict[str, Any]:
    """The ``conn-fields`` schema of one setting's type: ``type`` (one or a list), ``enum``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        names: list[str] = []
        for arg in args:
            for name in _as_list(json_schema(arg)["type"]):
                if name not in names:
                    names.append(name)
        return {"type": names[0] if len(names) == 1 else names}
    base = origin or annotation
    if base not in _JSON_TYPES:
        raise TypeError(f"no conn-fields type for {annotation!r}")
    return {"type": _JSON_TYPES[base]}


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def conn_fields(settings: type[ConnectionSettings]) -> dict[str, dict[str, Any]]:
    """``conn-fields`` of the provider info: the settings read from the extra JSON."""
    out: dict[str, dict[str, Any]] = {}
    for key in settings.extra_keys():
        info = settings.model_fields[key]
        schema = json_schema(info.annotation)
        default = info.get_default(call_default_factory=True)
        if default is not None and default is not PydanticUndefined:
            schema["default"] = default
        out[key] = {
            "label": info.title or key,
            "description": info.description or "",
            "schema": schema,
        }
    return out


def ui_field_behaviour(settings: type[ConnectionSettings]) -> dict[str, Any]:
    """``ui-field-behaviour``: the mapped standard fields relabeled, the others hidden."""
    behaviour: dict[str, Any] = {
        "hidden-fields": [f for f in STANDARD_FIELDS if f not in settings.fields],
        "relabeling": {
            field: settings.model_fields[key].title or key for field, key in settings.fields.items()
        },
    }
    if settings.placeholders:
        behaviour["placeholders"] = dict(settings.placeholders)
    return behaviour


def connection_types(package: str) -> list[dict[str, Any]]:
    """The ``connection-types`` entries of the provider info, one per settings model."""
    return [
        {
            "connection-type": conn_type,
            "hook-class-name": f"{package}.hooks.{settings.hook}",
            "hook-name": settings.hook_name,
            "conn-fields": conn_fields(settings),
            "ui-field-behaviour": ui_field_behaviour(settings),
        }
        for conn_type, settings in CONNECTION_SETTINGS.items()
    ]
