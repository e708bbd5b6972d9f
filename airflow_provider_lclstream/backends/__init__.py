"""Job backends behind one protocol (:mod:`.base`): local, psik, slurm, s3m sfapi.

Importing this package is cheap; ``backend_class(name)`` imports a backend on first use.
"""

from __future__ import annotations

from airflow_provider_lclstream.backends.base import (
    BACKENDS,
    BaseJobBackend,
    JobBackend,
    JobState,
    JobStatus,
    backend_class,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "BaseJobBackend",
    "JobBackend",
    "JobState",
    "JobStatus",
    "backend_class",
    "register_backend",
]
