"""SlurmBackend against slurmrestd v0.0.40 to v0.0.43, through a fake server (httpx.MockTransport).

We have no newer slurmrestd than 22.05 (v0.0.38): the responses here are hand-written from the
documented OpenAPI schemas of those versions (``job_state`` lists, ``*_no_val`` numbers,
``process_exit_code_verbose`` exit codes, ``result`` in the v0.0.40 submit answer), not recorded.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx
import pytest

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.backends.slurm import SlurmBackend, slurm_job_description
from airflow_provider_lclstream.config.job import JobSpec, ResourceSpec
from airflow_provider_lclstream.exceptions import JobNotFoundError

NEW_VERSIONS = ["v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43"]
URL = "http://slurm.test:6820"


def no_val(value: int | None) -> dict[str, Any]:
    return {"set": value is not None, "infinite": False, "number": value or 0}


def exit_code(code: int, signal: int | None = None) -> dict[str, Any]:
    return {
        "status": ["SIGNALED" if signal else "EXITED"],
        "return_code": no_val(code),
        "signal": {"id": no_val(signal), "name": "TERM" if signal else ""},
    }


def record(job_id: int, name: str, state: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "name": name,
        "user_name": "lcls",
        "job_state": state,
        "state_reason": "None",
        "exit_code": exit_code(0),
        "submit_time": no_val(1_700_000_000 + job_id),
        "standard_output": "/data/run/slurm-%x-%j.out",
        **extra,
    }


class FakeSlurmrestd:
    """Serves one API version; others answer 404 like slurmrestd does."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.submitted: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self.jobs: dict[int, dict[str, Any]] = {
            7: record(
                7, "scan", ["FAILED"], exit_code=exit_code(3), state_reason="NonZeroExitCode"
            ),
            8: record(8, "scan", ["CANCELLED"], exit_code=exit_code(0, 15)),
            9: record(9, "other", ["TIMEOUT"]),
            10: record(10, "done", ["COMPLETED", "COMPLETING"]),
            11: record(11, "waiting", ["PENDING", "REQUEUED"], state_reason="Priority"),
            12: record(12, "scan", ["RUNNING"], user_name="someone-else"),
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["X-SLURM-USER-TOKEN"] == "jwt"
        prefix = f"/slurm/{self.version}/"
        path = request.url.path
        if not path.startswith(prefix):
            return httpx.Response(404, text="Unable find requested URL.")
        tail = path.removeprefix(prefix).rstrip("/")
        meta = {"meta": {"plugin": {"type": "openapi/slurmctld", "name": "Slurm OpenAPI"}}}
        if tail == "ping":
            return httpx.Response(200, json={**meta, "pings": [], "errors": [], "warnings": []})
        if tail == "job/submit":
            body = json.loads(request.content)
            self.submitted.append(body)
            job_id = 42
            self.jobs[job_id] = record(job_id, body["job"]["name"], ["RUNNING"])
            answer: dict[str, Any] = {"job_id": job_id, "step_id": "batch", "errors": []}
            if self.version == "v0.0.40":  # the id was under "result" there
                answer = {"result": {"job_id": job_id, "step_id": "batch"}, "errors": []}
            return httpx.Response(200, json={**meta, **answer, "warnings": []})
        if tail == "jobs":
            return httpx.Response(
                200, json={**meta, "jobs": list(self.jobs.values()), "errors": []}
            )
        if tail.startswith("job/"):
            ref = tail.removeprefix("job/")
            if request.method == "DELETE":
                self.cancelled.append(ref)
                return httpx.Response(200, json={**meta, "errors": []})
            job = self.jobs.get(int(ref))
            if job is None:
                error = {"description": "Invalid job id specified", "error_number": 2017}
                return httpx.Response(500, json={**meta, "jobs": [], "errors": [error]})
            return httpx.Response(200, json={**meta, "jobs": [job], "errors": []})
        return httpx.Response(404, text="no route")


@pytest.fixture(params=NEW_VERSIONS)
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeSlurmrestd:
    fake = FakeSlurmrestd(request.param)
    transport = httpx.MockTransport(fake)
    monkeypatch.setattr(httpx, "Client", functools.partial(httpx.Client, transport=transport))
    monkeypatch.setattr(
        httpx, "AsyncClient", functools.partial(httpx.AsyncClient, transport=transport)
    )
    return fake


def backend() -> SlurmBackend:
    return SlurmBackend(URL, user="lcls", token="jwt", job_defaults={"partition": "milano"})


def spec() -> JobSpec:
    resources = ResourceSpec(
        duration=30, node_count=2, process_count=8, processes_per_node=4, gpu_cores_per_process=1
    )
    return JobSpec(
        name="scan",
        script="srun hostname",
        directory="/data/run",
        environment={"RUN": "12"},
        resources=resources,
        attributes={"account": "lcls:xpp"},
    )


def test_submit_body_in_the_shape_of_the_version(server: FakeSlurmrestd) -> None:
    b = backend()
    assert b.submit(spec()) == "42"
    assert b.api_version == server.version  # probed from newest down
    (body,) = server.submitted
    job = body["job"]
    script = job.pop("script") if server.version >= "v0.0.41" else body.pop("script")
    assert script == "#!/bin/bash\nsrun hostname"
    assert job == {
        "name": "scan",
        "current_working_directory": "/data/run",
        "standard_output": "/data/run/slurm-scan-%j.out",
        "environment": ["RUN=12", "PATH=/usr/local/bin:/usr/bin:/bin"],
        "time_limit": {"set": True, "infinite": False, "number": 30},
        "cpus_per_task": 1,
        "minimum_nodes": 2,
        "maximum_nodes": 2,
        "tasks": 8,
        "tasks_per_node": 4,
        "tres_per_task": "gres/gpu:1",
        "exclusive": ["true"],
        "partition": "milano",
        "account": "lcls:xpp",
    }
    b.close()


@pytest.mark.parametrize(
    ("job_id", "state", "native", "code", "reason"),
    [
        ("7", JobState.FAILED, "FAILED", 3, "NonZeroExitCode"),
        ("8", JobState.CANCELLED, "CANCELLED", 0, "killed by signal 15"),
        ("9", JobState.TIMEOUT, "TIMEOUT", 0, None),
        ("10", JobState.RUNNING, "COMPLETED+COMPLETING", 0, None),
        ("11", JobState.PENDING, "PENDING+REQUEUED", 0, "Priority"),
        ("12", JobState.RUNNING, "RUNNING", 0, None),
    ],
)
def test_state_normalized(
    server: FakeSlurmrestd,
    job_id: str,
    state: JobState,
    native: str,
    code: int,
    reason: str | None,
) -> None:
    status = backend().state(job_id)
    assert (status.state, status.native_state, status.exit_code, status.reason) == (
        state,
        native,
        code,
        reason,
    )


def test_find_cancel_unknown_and_log_path(
    server: FakeSlurmrestd, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend()
    assert b.find("scan") == "8"  # newest of this user's jobs named "scan" (12 is another's)
    assert b.find("nothing") is None
    b.cancel("8")
    assert server.cancelled == ["8"]
    with pytest.raises(JobNotFoundError, match="99"):
        b.state("99")
    b.log_tail("7")  # learns the output path from the record
    assert b._outputs["7"] == "/data/run/slurm-scan-7.out"


async def test_async_half(server: FakeSlurmrestd) -> None:
    b = backend()
    assert await b.asubmit(spec()) == "42"
    assert (await b.astate("42")).state is JobState.RUNNING
    assert await b.afind("scan") == "42"
    await b.acancel("42")
    assert server.cancelled == ["42"]
    await b.aclose()


def test_v38_description_shapes() -> None:
    desc = slurm_job_description(spec(), 38)
    assert desc["time_limit"] == 30
    assert desc["nodes"] == [2, 2] and "minimum_nodes" not in desc
    assert desc["gpus_per_task"] == "1" and "tres_per_task" not in desc
    assert desc["exclusive"] == "exclusive"
    assert desc["environment"] == {"RUN": "12", "PATH": "/usr/local/bin:/usr/bin:/bin"}
