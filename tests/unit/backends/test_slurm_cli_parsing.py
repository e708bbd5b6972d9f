"""The pure parts of the SLURM CLI backend: sbatch options and scontrol/sacct parsing."""

from __future__ import annotations

import importlib.util

import pytest

from airflow_provider_lclstream.backends.slurm_cli import (
    SlurmCliBackend,
    parse_exit_code,
    parse_sacct,
    parse_scontrol_job,
    sbatch_args,
)
from airflow_provider_lclstream.config.job import JobSpec, ResourceSpec
from airflow_provider_lclstream.exceptions import JobNotFoundError, MissingDependencyError


def test_sbatch_args() -> None:
    spec = JobSpec(
        name="scan",
        script="true",
        directory="/data/run",
        environment={"RUN": "12", "DETECTOR": "epix"},
        inherit_environment=False,
        resources=ResourceSpec(duration=30, node_count=2, process_count=8, gpu_cores_per_process=1),
        attributes={"account": "lcls:xpp", "exclusive": ""},
    )
    assert sbatch_args(spec, {"partition": "milano", "qos": "normal"}) == [
        "--parsable",
        "--job-name=scan",
        "--chdir=/data/run",
        "--output=/data/run/slurm-scan-%j.out",
        "--time=30",
        "--cpus-per-task=1",
        "--nodes=2",
        "--ntasks=8",
        "--gpus-per-task=1",
        "--exclusive",
        "--export=RUN,DETECTOR",
        "--partition=milano",
        "--qos=normal",
        "--account=lcls:xpp",
    ]
    inherit = JobSpec(name="x", script="true", resources=ResourceSpec(exclusive_node_use=False))
    args = sbatch_args(inherit, {"output": "/logs/%x-%j.out"})
    assert "--export=ALL" in args and "--output=/logs/%x-%j.out" in args
    assert "--chdir=/tmp" in args and "--exclusive" not in args


def test_parse_scontrol_job() -> None:
    line = (
        "JobId=28 JobName=my job UserId=root(0) JobState=FAILED Reason=NonZeroExitCode "
        "Dependency=(null) ExitCode=3:0 TRES=cpu=2,node=1 Socks/Node=* "
        "StdOut=/data/run/slurm-scan-28.out Power=\n"
    )
    fields = parse_scontrol_job(line)
    assert fields["JobId"] == "28" and fields["JobName"] == "my job"
    assert fields["JobState"] == "FAILED" and fields["ExitCode"] == "3:0"
    assert fields["TRES"] == "cpu=2,node=1" and fields["Socks/Node"] == "*"
    assert fields["StdOut"] == "/data/run/slurm-scan-28.out" and fields["Power"] == ""


def test_parse_exit_code_and_sacct() -> None:
    assert parse_exit_code("3:0") == (3, None)
    assert parse_exit_code("0:15") == (0, 15)
    assert parse_exit_code("") == (None, None)
    rows = parse_sacct("5|scan|CANCELLED by 0|0:15|root(0)|2026-01-01T00:00:00\n")
    assert rows == [
        {
            "job_id": "5",
            "name": "scan",
            "state": "CANCELLED by 0",
            "exit_code": "0:15",
            "user": "root",
            "submit": "2026-01-01T00:00:00",
        }
    ]


def test_job_ids_are_checked() -> None:
    with pytest.raises(JobNotFoundError, match="not a SLURM job id"):
        SlurmCliBackend().state("1; rm -rf /")


@pytest.mark.skipif(
    importlib.util.find_spec("airflow.providers.ssh") is not None, reason="SSH provider installed"
)
def test_ssh_needs_the_ssh_provider() -> None:
    with pytest.raises(MissingDependencyError, match=r"\[ssh\]"):
        _ = SlurmCliBackend(ssh_conn_id="login").runner
