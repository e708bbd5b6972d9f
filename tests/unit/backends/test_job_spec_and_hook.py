"""JobSpec (psik compatibility, names), the backend registry and connection parsing."""

from __future__ import annotations

import asyncio
import json

import pytest
from airflow.sdk import Connection

from airflow_provider_lclstream.backends.base import (
    BaseJobBackend,
    JobState,
    JobStatus,
    backend_class,
    run_sync,
)
from airflow_provider_lclstream.backends.local import LocalBackend
from airflow_provider_lclstream.config.job import (
    JobSpec,
    check_name,
    job_name_for,
    shell_join,
)
from airflow_provider_lclstream.exceptions import (
    IncompleteConnectionError,
    UnknownBackendError,
    UnsafeNameError,
)
from airflow_provider_lclstream.hooks.job_backend import (
    JobBackendHook,
    S3mSettings,
    settings_from_connection,
)


def test_job_spec_matches_psik_field_names_and_defaults() -> None:
    psik = pytest.importorskip("psik")
    ours = JobSpec(script="hostname")
    theirs = psik.JobSpec(script="hostname")
    assert set(JobSpec.model_fields) == set(psik.JobSpec.model_fields)
    assert ours.model_dump() == theirs.model_dump()
    spec = JobSpec(script="x", name="n", resources={"node_count": 2}, cb_secret="s3cret")
    converted = spec.to_psik()
    assert converted.resources.node_count == 2
    assert converted.cb_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in spec.model_dump_json() and "s3cret" not in repr(spec)


@pytest.mark.parametrize("name", ["xpp12345", "run-0042", "a.b_c+d"])
def test_check_name_accepts_plain_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["x; rm -rf /", "$(id)", "a b", "-rf", "a`b`", "", "é"])
def test_check_name_refuses_shell_syntax(name: str) -> None:
    with pytest.raises(UnsafeNameError, match="experiment"):
        check_name(name, "experiment")


def test_shell_join_quotes_every_argument() -> None:
    assert shell_join(["echo", "a b", "$(id)", 3]) == "echo 'a b' '$(id)' 3"


def test_job_name_is_deterministic_per_task_instance() -> None:
    name = job_name_for("dag", "manual__1", "task", -1)
    assert name == job_name_for("dag", "manual__1", "task", -1)
    assert name != job_name_for("dag", "manual__1", "task", 0)
    assert name != job_name_for("dag", "manual__2", "task", -1)
    assert check_name(name) == name and name.startswith("task-")
    assert job_name_for("d", "r", "t", prefix="my job; rm").startswith("my-job--rm-")


def test_registry_unknown_name_lists_known() -> None:
    assert backend_class("local") is LocalBackend
    with pytest.raises(UnknownBackendError, match="local.*psik|psik.*local"):
        backend_class("nope")


def test_status_round_trip() -> None:
    status = JobStatus("1", JobState.TIMEOUT, "TIMEOUT", 0, "walltime")
    assert JobStatus.from_dict(json.loads(json.dumps(status.to_dict()))) == status
    assert status.is_final and not JobState.RUNNING.is_final


def test_half_implemented_backend_is_reported() -> None:
    class Half(BaseJobBackend):
        def state(self, job_id: str) -> JobStatus:
            return JobStatus(job_id, JobState.RUNNING)

    backend = Half()
    assert asyncio.run(backend.astate("1")).state is JobState.RUNNING
    with pytest.raises(NotImplementedError, match="cancel"):
        backend.cancel("1")


async def test_run_sync_inside_a_running_loop() -> None:
    async def answer() -> int:
        return 42

    assert run_sync(answer()) == 42


def test_no_connection_means_local_backend() -> None:
    assert isinstance(JobBackendHook(None).get_conn(), LocalBackend)


def test_missing_keys_are_reported_together() -> None:
    conn = Connection(conn_id="olcf", conn_type="lclstream_s3m", extra=json.dumps({"x": 1}))
    with pytest.raises(IncompleteConnectionError) as info:
        settings_from_connection(conn)
    assert info.value.missing_keys == ["base_url", "token", "resource"]
    assert "olcf" in str(info.value)


def test_connection_fields_and_secrets() -> None:
    conn = Connection(
        conn_id="olcf",
        conn_type="lclstream_s3m",
        host="s3m.example.org",
        password="tok-123",
        extra=json.dumps({"resource": "frontier"}),
    )
    settings = settings_from_connection(conn)
    assert isinstance(settings, S3mSettings)
    assert settings.base_url == "https://s3m.example.org" and settings.resource == "frontier"
    assert "tok-123" not in repr(settings) and "tok-123" not in str(settings.model_dump())
    with pytest.raises(ValueError, match="frozen|Instance is frozen"):
        settings.resource = "x"  # type: ignore[misc]


def test_wrong_connection_type_names_the_accepted_ones() -> None:
    conn = Connection(conn_id="h", conn_type="http", host="x")
    with pytest.raises(ValueError, match="lclstream_local"):
        settings_from_connection(conn)


@pytest.mark.parametrize(
    "field",
    [
        {"attributes": {"partition\n#SBATCH --uid=0": "debug"}},
        {"attributes": {"account": "m1\n#SBATCH --uid=0"}},
        {"environment": {"X": "a\nb"}},
        {"environment": {"BAD KEY": "1"}},
    ],
)
def test_attributes_and_environment_cannot_inject_lines(field: dict) -> None:
    from pydantic import ValidationError

    from airflow_provider_lclstream.config.job import JobSpec

    with pytest.raises(ValidationError):
        JobSpec(script="#!/bin/bash\n", **field)


def test_hook_subclasses_default_to_their_own_connection() -> None:
    from airflow_provider_lclstream.hooks.job_backend import (
        JobBackendHook,
        SfapiJobHook,
        SlurmJobHook,
    )

    assert JobBackendHook().conn_id == "lclstream_local"
    assert SlurmJobHook().conn_id == "lclstream_slurm"
    assert SfapiJobHook().conn_id == "lclstream_sfapi"
    assert JobBackendHook(None).conn_id is None
