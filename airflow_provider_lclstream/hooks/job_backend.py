"""Hooks that turn one Airflow connection into one job backend.

``JobBackendHook(conn_id)`` reads the connection, picks the backend from its type and parses its
fields into a frozen settings model (all missing keys reported at once). ``conn_id=None`` or
``"lclstream_local"`` without such a connection gives the local backend with its defaults.

Connection fields per type (any of them may also be given as an ``extra`` key):

- ``lclstream_local``: extra ``root`` (job directory root), ``kill_grace`` (seconds).
- ``lclstream_slurm``: host = slurmrestd URL, login = user, password = JWT (else minted with
  ``scontrol token``); extra ``api_version``, ``verify``, ``job_defaults`` (e.g. partition).
- ``lclstream_psik``: extra ``prefix`` (job directory) or ``config`` (psik.json), ``backend_type``.
- ``lclstream_sfapi``: login = client id, password = private key; extra ``machine``,
  ``token_url``, ``user``, ``job_defaults``.
- ``lclstream_s3m``: host = S3M base URL, password = token; extra ``resource`` (cluster),
  ``api_version`` (default v0.0.43), ``verify``, ``job_defaults``.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow.sdk import BaseHook
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from airflow_provider_lclstream.backends.base import backend_class
from airflow_provider_lclstream.exceptions import IncompleteConnectionError

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_lclstream.backends.base import JobBackend

LOCAL_CONN_ID = "lclstream_local"


class BackendSettings(BaseModel):
    """Settings of one backend, parsed from a connection; ``required`` names what must be set."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    backend: ClassVar[str]
    conn_type: ClassVar[str]
    #: connection field -> settings key
    fields: ClassVar[dict[str, str]] = {}
    required: ClassVar[tuple[str, ...]] = ()

    def backend_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}

    @classmethod
    def from_values(cls, values: dict[str, Any], conn_id: str | None) -> BackendSettings:
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


class LocalSettings(BackendSettings):
    backend = "local"
    conn_type = "lclstream_local"
    root: str | None = None
    kill_grace: float = 10.0


class SlurmSettings(BackendSettings):
    backend = "slurm"
    conn_type = "lclstream_slurm"
    fields = {"host": "url", "login": "user", "password": "token"}
    required = ("url",)
    url: str
    user: str | None = None
    token: SecretStr | None = None
    api_version: str | None = None
    verify: bool | str = True
    job_defaults: dict[str, Any] = {}


class SlurmCliSettings(BackendSettings):
    backend = "slurm_cli"
    conn_type = "lclstream_slurm_cli"
    ssh_conn_id: str | None = None
    job_defaults: dict[str, Any] = {}
    accounting: Literal["auto", "sacct", "jobcomp", "none"] = "auto"
    bin_dir: str | None = None


class SfapiSettings(BackendSettings):
    backend = "sfapi"
    conn_type = "lclstream_sfapi"
    fields = {"host": "api_base_url", "login": "client_id", "password": "private_key"}
    required = ("client_id", "private_key")
    client_id: str
    private_key: SecretStr
    machine: str = "perlmutter"
    api_base_url: str | None = None
    token_url: str | None = None
    user: str | None = None
    job_defaults: dict[str, Any] = {}


class PsikSettings(BackendSettings):
    backend = "psik"
    conn_type = "lclstream_psik"
    prefix: str | None = None
    config: str | None = None
    backend_type: str = "local"


class S3mSettings(BackendSettings):
    backend = "s3m"
    conn_type = "lclstream_s3m"
    fields = {"host": "base_url", "password": "token"}
    required = ("base_url", "token", "resource")
    base_url: str
    token: SecretStr
    resource: str
    api_version: str = "v0.0.43"
    verify: bool | str = True
    job_defaults: dict[str, Any] = {}


SETTINGS: dict[str, type[BackendSettings]] = {
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


def _base_url(host: str | None, port: int | None, schema: str | None) -> str | None:
    if not host:
        return None
    if "://" not in host:
        host = f"https://{host}"
    if port and host.count(":") < 2:
        host = f"{host}:{port}"
    if schema:
        host = f"{host.rstrip('/')}/{schema.lstrip('/')}"
    return host


def connection_values(conn: Connection, settings: type[BackendSettings]) -> dict[str, Any]:
    """Mapped connection fields, overridden by the extra JSON."""
    values: dict[str, Any] = {}
    for field, key in settings.fields.items():
        if field == "host":
            value: Any = _base_url(conn.host, conn.port, conn.schema)
        else:
            value = getattr(conn, field, None)
        if value not in (None, ""):
            values[key] = value
    values.update(conn.extra_dejson or {})
    return values


def settings_from_connection(conn: Connection) -> BackendSettings:
    """Parse a connection of one of the ``lclstream_*`` types."""
    try:
        settings = SETTINGS[conn.conn_type or ""]
    except KeyError:
        raise ValueError(
            f"connection {conn.conn_id!r} has type {conn.conn_type!r}; job backends need one of "
            f"{', '.join(sorted(SETTINGS))}"
        ) from None
    return settings.from_values(connection_values(conn, settings), conn.conn_id)


def backend_from_settings(settings: BackendSettings) -> JobBackend:
    cls = backend_class(settings.backend)
    return cls(**settings.backend_kwargs())  # type: ignore[no-any-return]


_DEFAULT_CONN = object()


class JobBackendHook(BaseHook):
    """One connection -> one :class:`~airflow_provider_lclstream.backends.base.JobBackend`.

    The connection is read on first use (``get_conn``/``aget_conn``), never in ``__init__``.
    """

    conn_name_attr = "conn_id"
    default_conn_name = LOCAL_CONN_ID
    conn_type = "lclstream_local"
    hook_name = "LCLStream local jobs"

    def __init__(self, conn_id: str | None | object = _DEFAULT_CONN, **kwargs: Any) -> None:
        """``conn_id`` defaults to the class's ``default_conn_name`` (``lclstream_local``,
        ``lclstream_slurm``, ...); None means the local backend without a connection."""
        super().__init__(**kwargs)
        self.conn_id: str | None = (
            type(self).default_conn_name if conn_id is _DEFAULT_CONN else conn_id  # type: ignore[assignment]
        )
        self._backend: JobBackend | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(conn_id={self.conn_id!r})"

    @cached_property
    def settings(self) -> BackendSettings:
        if not self.conn_id:
            return LocalSettings()
        try:
            conn = self.get_connection(self.conn_id)
        except Exception:
            if self.conn_id == LOCAL_CONN_ID:  # the default works without a connection
                return LocalSettings()
            raise
        return settings_from_connection(conn)

    async def asettings(self) -> BackendSettings:
        if "settings" not in self.__dict__:
            if not self.conn_id:
                parsed: BackendSettings = LocalSettings()
            else:
                try:
                    conn = await self.aget_connection(self.conn_id)
                except Exception:
                    if self.conn_id != LOCAL_CONN_ID:
                        raise
                    conn = None
                parsed = LocalSettings() if conn is None else settings_from_connection(conn)
            self.__dict__["settings"] = parsed
        return self.settings

    def get_conn(self) -> JobBackend:
        """The backend (created once per hook)."""
        if self._backend is None:
            self._backend = backend_from_settings(self.settings)
        return self._backend

    async def aget_conn(self) -> JobBackend:
        """The backend, reading the connection without blocking the event loop."""
        if self._backend is None:
            self._backend = backend_from_settings(await self.asettings())
        return self._backend

    def test_connection(self) -> tuple[bool, str]:
        try:
            backend = self.get_conn()
            backend.find("lclstream-connection-test")
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"
        return True, f"{backend.name} backend reachable"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["host", "schema", "login", "password", "port"],
            "relabeling": {},
            "placeholders": {"extra": '{"root": "~/.lclstream/jobs", "kill_grace": 10}'},
        }


class SlurmJobHook(JobBackendHook):
    """SLURM through slurmrestd (``lclstream_slurm``)."""

    conn_type = "lclstream_slurm"
    hook_name = "LCLStream SLURM (slurmrestd)"
    default_conn_name = "lclstream_slurm"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "slurmrestd URL", "login": "User", "password": "JWT"},
            "placeholders": {"extra": '{"api_version": "v0.0.43", "job_defaults": {}}'},
        }


class SlurmCliJobHook(JobBackendHook):
    """SLURM through sbatch/squeue/sacct/scancel, locally or over SSH (``lclstream_slurm_cli``)."""

    conn_type = "lclstream_slurm_cli"
    hook_name = "LCLStream SLURM (command line)"
    default_conn_name = "lclstream_slurm_cli"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["host", "schema", "port", "login", "password"],
            "placeholders": {"extra": '{"ssh_conn_id": "cluster_ssh", "accounting": "auto"}'},
        }


class SfapiJobHook(JobBackendHook):
    """NERSC Superfacility API (``lclstream_sfapi``)."""

    conn_type = "lclstream_sfapi"
    hook_name = "LCLStream NERSC SF API"
    default_conn_name = "lclstream_sfapi"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {
                "host": "API base URL (optional)",
                "login": "Client id",
                "password": "Private key (PEM or JWK)",
            },
            "placeholders": {
                "extra": '{"machine": "perlmutter", "job_defaults": {"account": "m0000", '
                '"qos": "regular", "constraint": "cpu"}}'
            },
        }


class PsikJobHook(JobBackendHook):
    """psik's job manager (``lclstream_psik``)."""

    conn_type = "lclstream_psik"
    hook_name = "LCLStream psik"
    default_conn_name = "lclstream_psik"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["host", "schema", "login", "password", "port"],
            "relabeling": {},
            "placeholders": {"extra": '{"prefix": "/path/to/psik/jobs", "backend_type": "local"}'},
        }


class S3mJobHook(JobBackendHook):
    """OLCF S3M SLURM proxy (``lclstream_s3m``)."""

    conn_type = "lclstream_s3m"
    hook_name = "LCLStream S3M"
    default_conn_name = "lclstream_s3m"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["login", "port"],
            "relabeling": {"host": "S3M base URL", "password": "Token"},
            "placeholders": {"extra": '{"resource": "<cluster>", "api_version": "v0.0.43"}'},
        }
