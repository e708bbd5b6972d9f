"""Where a job runs: SLURM host lists, job records' nodes, and the ``nodelist`` pin in sbatch
options and slurmrestd job descriptions."""

from __future__ import annotations

import pytest

from airflow_provider_lclstream.backends.base import JobState, JobStatus
from airflow_provider_lclstream.backends.sbatch import sbatch_args
from airflow_provider_lclstream.backends.slurm import (
    expand_hostlist,
    normalize_job,
    slurm_job_description,
    status_from_native,
)
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.exceptions import JobBackendError


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("", []),
        ("(null)", []),
        ("lcls-n1", ["lcls-n1"]),
        ("lcls-n[1-3,5],gpu7", ["lcls-n1", "lcls-n2", "lcls-n3", "lcls-n5", "gpu7"]),
        ("sdf[008-010]", ["sdf008", "sdf009", "sdf010"]),
        ("a[1-2]b,c", ["a1b", "a2b", "c"]),
    ],
)
def test_host_lists_expand(value: str, names: list[str]) -> None:
    assert expand_hostlist(value) == names


def test_a_bad_host_list_is_an_error() -> None:
    with pytest.raises(JobBackendError, match="cannot read SLURM host list"):
        expand_hostlist("n[1-")


def test_the_job_record_says_where_it_runs_and_the_status_carries_it() -> None:
    running = normalize_job({"job_id": 7, "job_state": ["RUNNING"], "nodes": "lcls-n[1-2]"})
    status = status_from_native("7", running)
    assert status.state is JobState.RUNNING and status.nodes == ("lcls-n1", "lcls-n2")
    assert JobStatus.from_dict(status.to_dict()) == status
    assert status.to_dict()["nodes"] == ["lcls-n1", "lcls-n2"]  # plain JSON for triggers
    pending = normalize_job({"job_id": 8, "job_state": "PENDING", "nodes": ""})
    assert status_from_native("8", pending).nodes == ()
    assert JobStatus.from_dict({"job_id": "9", "state": "running"}).nodes == ()  # older events


def test_the_pin_is_nodelist_for_sbatch_and_required_nodes_for_slurmrestd() -> None:
    spec = JobSpec(name="buffer", script="#!/bin/bash\ntrue\n", attributes={"nodelist": "n7"})
    assert "--nodelist=n7" in sbatch_args(spec)
    for minor in (39, 41):
        desc = slurm_job_description(spec, minor)
        assert desc["required_nodes"] == ["n7"] and "nodelist" not in desc
    # v0.0.38 has no such field (slurmrestd 22.05 answers 'Disabled key: "required_nodes"')
    with pytest.raises(JobBackendError, match=r"v0.0.38 cannot place a job on a named node \(n7\)"):
        slurm_job_description(spec, 38)
