"""sbatch options shared by the backends that write batch scripts (``slurm_cli``, ``sfapi``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_lclstream.config.job import ResourceSpec


def resource_options(res: ResourceSpec) -> dict[str, str | None]:
    """sbatch long options (no dashes) for a job's resources; ``None`` values are flags."""
    options: dict[str, str | None] = {
        "time": str(res.duration),
        "cpus-per-task": str(res.cpu_cores_per_process),
    }
    if res.node_count:
        options["nodes"] = str(res.node_count)
    if res.process_count:
        options["ntasks"] = str(res.process_count)
    if res.processes_per_node:
        options["ntasks-per-node"] = str(res.processes_per_node)
    if res.gpu_cores_per_process:
        options["gpus-per-task"] = str(res.gpu_cores_per_process)
    if res.exclusive_node_use:
        options["exclusive"] = None
    return options
