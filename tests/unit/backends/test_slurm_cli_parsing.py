"""The pure parts of the SLURM CLI backend: sbatch options and scontrol/squeue/sacct parsing."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence

import pytest

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.backends.slurm_cli import (
    CommandResult,
    SlurmCliBackend,
    parse_exit_code,
    parse_jobs_json,
    parse_sacct,
    sbatch_args,
)
from airflow_provider_lclstream.config.job import JobSpec, ResourceSpec
from airflow_provider_lclstream.exceptions import (
    JobBackendError,
    JobNotFoundError,
    MissingDependencyError,
)


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


# `scontrol show job --json` of SLURM 23.02+ (v0.0.40 shapes), hand-written from the schema
SCONTROL_JSON = {
    "jobs": [
        {
            "job_id": 28,
            "name": "my job",
            "user_name": "lcls",
            "job_state": ["FAILED"],
            "state_reason": "NonZeroExitCode",
            "exit_code": {
                "status": ["EXITED"],
                "return_code": {"set": True, "infinite": False, "number": 3},
            },
            "standard_output": "/data/run/slurm-%x-%j.out",
        }
    ],
    "errors": [],
}
# `squeue --json` of SLURM 22.05 (v0.0.38, as recorded on the test cluster): every job, raw
# wait status as exit code, the output pattern unexpanded
SQUEUE_JSON = {
    "jobs": [
        {"job_id": 5, "name": "other", "job_state": "RUNNING", "exit_code": 0},
        {
            "job_id": 151,
            "name": "probe",
            "user_name": "root",
            "job_state": "COMPLETED",
            "state_reason": "None",
            "exit_code": 0,
            "standard_output": "/tmp/probe-%j.out",
        },
    ],
    "errors": [],
}


class FakeRunner:
    """Answers SLURM commands from a table: argv prefix -> (rc, stdout, stderr)."""

    remote = False
    user = "lcls"

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> CommandResult:
        self.calls.append(list(argv))
        for prefix, (rc, out, err) in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return CommandResult(rc, out.encode(), err.encode())
        return CommandResult(1, b"", b"no such command here")

    def close(self) -> None:
        pass


def test_state_from_scontrol_json() -> None:
    runner = FakeRunner({("scontrol", "show", "job", "--json"): (0, json.dumps(SCONTROL_JSON), "")})
    backend = SlurmCliBackend(runner=runner)
    status = backend.state("28")
    assert (status.state, status.exit_code, status.reason) == (
        JobState.FAILED,
        3,
        "NonZeroExitCode",
    )
    assert backend._outputs["28"] == "/data/run/slurm-my job-28.out"
    invalid = {"jobs": [], "errors": [{"error_number": 2017}]}
    assert parse_jobs_json(json.dumps(invalid), "x") is None


def test_state_falls_back_to_squeue_json_before_slurm_23() -> None:
    unrecognized = (1, "", "scontrol: unrecognized option '--json'\nTry \"scontrol --help\"")
    runner = FakeRunner(
        {
            ("scontrol", "show", "job", "--json"): unrecognized,
            ("squeue", "--json"): (0, json.dumps(SQUEUE_JSON), ""),
        }
    )
    backend = SlurmCliBackend(runner=runner)
    status = backend.state("151")
    assert (status.state, status.exit_code, status.reason) == (JobState.COMPLETED, 0, None)
    assert backend._outputs["151"] == "/tmp/probe-151.out"
    backend.state("151")  # scontrol is not asked again
    assert [c[0] for c in runner.calls] == ["scontrol", "squeue", "squeue"]


def test_garbage_and_errors_are_job_backend_errors() -> None:
    for answer in [(0, "<html>oops</html>", ""), (0, "[1, 2]", ""), (2, "", "slurmctld down")]:
        runner = FakeRunner({("scontrol",): answer})
        with pytest.raises(JobBackendError, match="scontrol show job --json 7"):
            SlurmCliBackend(runner=runner).state("7")
    errors = {"jobs": [], "errors": [{"description": "Unable to contact slurm controller"}]}
    runner = FakeRunner({("scontrol",): (1, json.dumps(errors), "")})
    with pytest.raises(JobBackendError, match="Unable to contact"):
        SlurmCliBackend(runner=runner).state("7")


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


def test_working_directory_precedence() -> None:
    spec = JobSpec(name="w", script="true", directory="/spec")
    args = sbatch_args(spec, {"chdir": "/conn", "partition": "p"})
    assert "--chdir=/spec" in args and "--output=/spec/slurm-w-%j.out" in args
    assert not any(a.startswith("--chdir=/conn") for a in args)
    moved = spec.model_copy(update={"attributes": {"chdir": "/attr"}})
    args = sbatch_args(moved, {"chdir": "/conn"})
    assert "--chdir=/attr" in args and "--output=/attr/slurm-w-%j.out" in args
    plain = JobSpec(name="w", script="true")
    assert "--chdir=/conn" in sbatch_args(plain, {"chdir": "/conn"})
