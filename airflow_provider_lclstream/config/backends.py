"""The job-backend registry: one table that every place naming a backend reads.

A row says what a backend is called, where its class lives, the Airflow connection type that
configures it (and that type's settings model), one line of description, and whether it can
put a job on a named host (the buffer on ``buffer_host``). The transfer request validates its
``backend`` names here, ``JobBackendHook`` picks a connection type's backend here, the example
DAGs' forms list the names from here and the generated configuration reference renders the
table. :func:`register_backend` adds a row, so a backend registered once is valid everywhere.

This module is in ``config/`` (the lowest layer) and imports nothing: classes and settings
models are ``"module:Class"`` strings that ``backends.base.backend_class`` and the hook import
on first use, so optional dependencies (psik, sfapi_client) stay optional.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_lclstream.exceptions import UnknownBackendError

_PACKAGE = "airflow_provider_lclstream"
_SETTINGS = f"{_PACKAGE}.config.connections"


@dataclass(frozen=True)
class BackendInfo:
    """One registered job backend."""

    name: str
    #: ``"module:Class"`` of the backend
    target: str
    description: str = ""
    #: the Airflow connection type that configures it (``lclstream_<name>`` unless told)
    conn_type: str = ""
    #: the connection id a transfer role uses when it names none (``lclstream_<name>``)
    conn_id: str = ""
    #: can place a job on a named host (``nodelist``): a buffer can run on ``buffer_host``
    pins_node: bool = False
    #: ``"module:Class"`` of its connection settings model; ``None``: the connection's extra
    #: JSON is passed to the class as keyword arguments
    settings: str | None = None


#: Backend name -> its row, in the order the docs and forms list them.
BACKENDS: dict[str, BackendInfo] = {}


def register_backend(
    name: str,
    target: str | type,
    *,
    description: str = "",
    conn_type: str | None = None,
    conn_id: str | None = None,
    pins_node: bool = False,
    settings: str | type | None = None,
) -> BackendInfo:
    """Add or replace a backend: its class (or ``"module:Class"``) and what the rest needs.

    Registered in a module that every Airflow component imports (a plugin, the DAG file's
    package), the name is valid in transfer requests, the hook serves connections of type
    ``conn_type`` (default ``lclstream_<name>``) with it, a role that names no connection uses
    ``conn_id`` (default ``lclstream_<name>``), and the example DAGs' forms offer it.
    """
    info = BackendInfo(
        name=name,
        target=_path(target),
        description=description,
        conn_type=conn_type or f"lclstream_{name}",
        conn_id=conn_id or f"lclstream_{name}",
        pins_node=pins_node,
        settings=None if settings is None else _path(settings),
    )
    BACKENDS[name] = info
    return info


def _path(target: str | type) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def backend_info(name: str) -> BackendInfo:
    """The row of ``name``; unknown names fail listing the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnknownBackendError(
            f"unknown job backend {name!r}; known backends: {', '.join(backend_names())}"
        ) from None


def backend_names() -> list[str]:
    """Every registered backend name, in registration order."""
    return list(BACKENDS)


def backend_for_conn_type(conn_type: str) -> BackendInfo | None:
    """The backend a connection type configures, or None."""
    return next((info for info in BACKENDS.values() if info.conn_type == conn_type), None)


def _builtin(name: str, cls: str, settings: str, description: str, pins_node: bool) -> None:
    register_backend(
        name,
        f"{_PACKAGE}.backends.{cls}",
        description=description,
        pins_node=pins_node,
        settings=f"{_SETTINGS}:{settings}",
    )


_builtin("local", "local:LocalBackend", "LocalSettings", "processes on the worker's host", False)
_builtin("slurm", "slurm:SlurmBackend", "SlurmSettings", "SLURM through slurmrestd", True)
_builtin(
    "slurm_cli",
    "slurm_cli:SlurmCliBackend",
    "SlurmCliSettings",
    "SLURM through sbatch/scontrol/sacct/scancel, here or over SSH",
    True,
)
_builtin("psik", "psik_backend:PsikBackend", "PsikSettings", "psik's job manager", False)
_builtin("sfapi", "sfapi:SfapiBackend", "SfapiSettings", "NERSC's Superfacility API", True)
_builtin("s3m", "s3m:S3mBackend", "S3mSettings", "OLCF's S3M SLURM proxy", True)
