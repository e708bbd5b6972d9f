"""S3mBackend against a small local FAKE S3M server (not the real OLCF service).

The fake implements only the documented endpoints, with slurmrestd v0.0.43 bodies:
``POST /slurm/v0.0.43/<resource>/job/submit``, ``GET|DELETE /slurm/v0.0.43/<resource>/job/<id>``
and ``GET .../jobs``, and checks the raw token in ``Authorization``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_lclstream.backends.base import JobState
from airflow_provider_lclstream.backends.s3m import S3mBackend
from airflow_provider_lclstream.config.job import JobSpec
from airflow_provider_lclstream.exceptions import JobBackendError, JobNotFoundError

TOKEN = "tok-abc"
PREFIX = "/slurm/v0.0.43/frontier/"


class FakeS3M(BaseHTTPRequestHandler):
    jobs: dict[str, dict[str, Any]] = {}
    submitted: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> str | None:
        if self.headers.get("Authorization") != TOKEN:
            self._send(401, {"errors": [{"description": "bad token"}]})
            return None
        if not self.path.startswith(PREFIX):
            self._send(404, {"errors": [{"description": "no such resource"}]})
            return None
        return self.path[len(PREFIX) :]

    def do_POST(self) -> None:  # noqa: N802
        if (tail := self._route()) != "job/submit":
            return None if tail is None else self._send(404, {})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.submitted.append(body)
        job_id = str(1000 + len(self.jobs))
        code = 0 if "exit 0" in body["job"]["script"] else 2
        self.jobs[job_id] = {
            "job_id": int(job_id),
            "name": body["job"]["name"],
            "job_state": ["COMPLETED" if code == 0 else "FAILED"],
            "exit_code": {
                "status": ["SUCCESS" if code == 0 else "ERROR"],
                "return_code": {"set": True, "infinite": False, "number": code},
            },
        }
        self._send(200, {"job_id": int(job_id), "result": {"job_id": int(job_id)}, "errors": []})

    def do_GET(self) -> None:  # noqa: N802
        tail = self._route()
        if tail == "jobs":
            return self._send(200, {"jobs": list(self.jobs.values()), "errors": []})
        if tail and tail.startswith("job/") and tail[4:] in self.jobs:
            return self._send(200, {"jobs": [self.jobs[tail[4:]]], "errors": []})
        if tail is not None:
            self._send(404, {"jobs": [], "errors": [{"error_number": 2017}]})

    def do_DELETE(self) -> None:  # noqa: N802
        tail = self._route()
        if tail and tail[4:] in self.jobs:
            self.jobs[tail[4:]]["job_state"] = ["CANCELLED"]
            return self._send(200, {"errors": []})
        if tail is not None:
            self._send(404, {"errors": [{"error_number": 2017}]})


@pytest.fixture
def server() -> Iterator[str]:
    FakeS3M.jobs, FakeS3M.submitted = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeS3M)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_submit_state_find_cancel(server: str) -> None:
    backend = S3mBackend(server, TOKEN, "frontier", job_defaults={"account": "abc123"})
    ok = backend.submit(JobSpec(name="lcls-ok", script="#!/bin/bash\nexit 0\n"))
    bad = backend.submit(JobSpec(name="lcls-bad", script="#!/bin/bash\nexit 2\n"))
    job = FakeS3M.submitted[0]["job"]
    assert job["account"] == "abc123" and job["time_limit"]["number"] == 10
    assert isinstance(job["environment"], list)
    assert backend.state(ok).state is JobState.COMPLETED
    status = backend.state(bad)
    assert (status.state, status.exit_code) == (JobState.FAILED, 2)
    assert backend.find("lcls-bad") == bad and backend.find("other") is None
    backend.cancel(ok)
    assert backend.state(ok).state is JobState.CANCELLED
    assert backend.log_tail(ok, 5) == ("", 5)
    with pytest.raises(JobNotFoundError):
        backend.state("999")
    backend.close()


async def test_async_half_and_bad_token(server: str) -> None:
    backend = S3mBackend(server, TOKEN, "frontier")
    job_id = await backend.asubmit(JobSpec(name="a", script="exit 0"))
    assert (await backend.astate(job_id)).state is JobState.COMPLETED
    await backend.aclose()
    wrong = S3mBackend(server, "nope", "frontier")
    with pytest.raises(JobBackendError, match="token"):
        await wrong.astate(job_id)
    await wrong.aclose()


def test_script_gets_a_shebang(server: str) -> None:
    backend = S3mBackend(server, TOKEN, "frontier")
    backend.submit(JobSpec(name="plain", script="exit 0"))
    backend.submit(JobSpec(name="own", script="#!/bin/sh\nexit 0"))
    scripts = [body["job"]["script"] for body in FakeS3M.submitted]
    assert scripts == ["#!/bin/bash\nexit 0", "#!/bin/sh\nexit 0"]
    backend.close()
