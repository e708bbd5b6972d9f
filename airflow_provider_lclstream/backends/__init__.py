"""Job backends behind one protocol (:mod:`.base`): local, psik, slurm, slurm_cli, sfapi, s3m.

Importing this package is cheap; ``backend_class(name)`` imports a backend on first use. The
registry itself (names, classes, connection types) is :mod:`..config.backends`. The SLURM-shaped
backends share one library: :mod:`.slurm` (states, job descriptions, scripts, logs) and
:mod:`.sbatch` (sbatch options and batch scripts).
"""

from __future__ import annotations

from airflow_provider_lclstream.backends.base import (
    BACKENDS,
    BackendInfo,
    BaseJobBackend,
    JobBackend,
    JobState,
    JobStatus,
    backend_class,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "BackendInfo",
    "BaseJobBackend",
    "JobBackend",
    "JobState",
    "JobStatus",
    "backend_class",
    "register_backend",
]
