"""Hooks that turn one Airflow connection into one job backend.

``JobBackendHook(conn_id)`` reads the connection, picks the backend from its type and parses its
fields into a frozen settings model (all missing keys reported at once). ``conn_id=None`` or
``"lclstream_local"`` without such a connection gives the local backend with its defaults (its
job directory from ``[lclstream] jobs_dir``).

The settings models, which connection field feeds which setting and the connection form
(``conn-fields``, ``ui-field-behaviour`` in ``get_provider_info``) live in
:mod:`airflow_provider_lclstream.config.connections`; any mapped field may also be given as an
``extra`` key, which wins.
"""

from __future__ import annotations

import importlib
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseHook
from pydantic import ConfigDict

from airflow_provider_lclstream.backends.base import backend_class
from airflow_provider_lclstream.config.backends import (
    BACKENDS,
    BackendInfo,
    backend_for_conn_type,
    backend_info,
)
from airflow_provider_lclstream.config.connections import (
    BackendSettings,
    LocalSettings,
    PsikSettings,
    S3mSettings,
    SfapiSettings,
    SlurmCliSettings,
    SlurmSettings,
)
from airflow_provider_lclstream.hooks import settings as lclstream_settings

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_lclstream.backends.base import JobBackend

LOCAL_CONN_ID = backend_info("local").conn_id


class ExtraSettings(BackendSettings):
    """Settings of a registered backend without a settings model: the extra JSON as kwargs."""

    model_config = ConfigDict(frozen=True, extra="allow")
    hook: ClassVar[str] = "job_backend.JobBackendHook"

    def backend_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in (self.model_extra or {}).items() if v is not None}


@cache
def _extra_settings(info: BackendInfo) -> type[BackendSettings]:
    attrs = {
        "backend": info.name,
        "conn_type": info.conn_type,
        "hook_name": info.description or info.name,
        "__module__": __name__,
    }
    return type(f"ExtraSettings_{info.name}", (ExtraSettings,), attrs)


def settings_class(conn_type: str) -> type[BackendSettings]:
    """The settings model of a connection type, from the backend registry.

    A backend registered without one gets :class:`ExtraSettings`: its connection's extra JSON
    becomes the backend's keyword arguments.
    """
    info = backend_for_conn_type(conn_type)
    if info is None:
        known = ", ".join(sorted(i.conn_type for i in BACKENDS.values()))
        raise KeyError(f"no job backend has connection type {conn_type!r}; known: {known}")
    if info.settings is None:
        return _extra_settings(info)
    module, _, name = info.settings.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


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
    # the connection form saves an empty field as null or "": unset, the default applies
    values.update({k: v for k, v in (conn.extra_dejson or {}).items() if v not in (None, "")})
    return values


def settings_from_connection(conn: Connection) -> BackendSettings:
    """Parse a connection of one of the ``lclstream_*`` types."""
    try:
        settings = settings_class(conn.conn_type or "")
    except KeyError:
        raise ValueError(
            f"connection {conn.conn_id!r} has type {conn.conn_type!r}; job backends need one of "
            f"{', '.join(sorted(i.conn_type for i in BACKENDS.values()))}"
        ) from None
    return settings.from_values(connection_values(conn, settings), conn.conn_id)


def backend_from_settings(settings: BackendSettings) -> JobBackend:
    """The backend; the local one's job directory defaults to ``[lclstream] jobs_dir``."""
    kwargs = settings.backend_kwargs()
    if isinstance(settings, LocalSettings) and not kwargs.get("root"):
        kwargs["root"] = lclstream_settings.get("jobs_dir")
    cls = backend_class(settings.backend)
    return cls(**kwargs)  # type: ignore[no-any-return]


_DEFAULT_CONN = object()


class JobBackendHook(BaseHook):
    """One connection -> one :class:`~airflow_provider_lclstream.backends.base.JobBackend`.

    The connection is read on first use (``get_conn``/``aget_conn``), never in ``__init__``.
    """

    conn_name_attr = "conn_id"
    default_conn_name = LOCAL_CONN_ID
    conn_type = LocalSettings.conn_type
    hook_name = LocalSettings.hook_name

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


class SlurmJobHook(JobBackendHook):
    """SLURM through slurmrestd (``lclstream_slurm``)."""

    conn_type = SlurmSettings.conn_type
    hook_name = SlurmSettings.hook_name
    default_conn_name = backend_info("slurm").conn_id


class SlurmCliJobHook(JobBackendHook):
    """SLURM through sbatch/squeue/sacct/scancel, locally or over SSH (``lclstream_slurm_cli``)."""

    conn_type = SlurmCliSettings.conn_type
    hook_name = SlurmCliSettings.hook_name
    default_conn_name = backend_info("slurm_cli").conn_id


class SfapiJobHook(JobBackendHook):
    """NERSC Superfacility API (``lclstream_sfapi``)."""

    conn_type = SfapiSettings.conn_type
    hook_name = SfapiSettings.hook_name
    default_conn_name = backend_info("sfapi").conn_id


class PsikJobHook(JobBackendHook):
    """psik's job manager (``lclstream_psik``)."""

    conn_type = PsikSettings.conn_type
    hook_name = PsikSettings.hook_name
    default_conn_name = backend_info("psik").conn_id


class S3mJobHook(JobBackendHook):
    """OLCF S3M SLURM proxy (``lclstream_s3m``)."""

    conn_type = S3mSettings.conn_type
    hook_name = S3mSettings.hook_name
    default_conn_name = backend_info("s3m").conn_id
