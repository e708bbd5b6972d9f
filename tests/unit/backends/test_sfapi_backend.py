"""SfapiBackend through the real ``sfapi_client.AsyncClient`` against a small local FAKE SF API.

The fake (stdlib ``http.server`` on 127.0.0.1; not NERSC's service) implements only the
endpoints sfapi_client and the backend call, shaped like the documented SF API v1.2:

- ``POST /token``: OAuth2 client credentials with a ``private_key_jwt`` client assertion, whose
  RS256 signature, issuer, subject and audience it checks against the test key pair;
- ``GET /api/status/perlmutter``, ``GET /api/account/``;
- ``POST /api/compute/jobs/perlmutter`` (form ``job``, ``isPath``) -> a task; ``GET
  /api/tasks/<id>`` reports it ``completed`` with the job id (the first task of a test
  ``new`` once before, so the client's task polling runs; it sleeps 1 s there);
- ``GET /api/compute/jobs/perlmutter?sacct=..&kwargs=jobid=..|name=..|user=..`` (squeue rows
  for queued/running jobs; sacct rows, with their ``.batch`` steps, for all);
- ``DELETE /api/compute/jobs/perlmutter/<id>`` -> a task;
- ``GET /api/utilities/ls/perlmutter/<path>`` and ``/api/utilities/download/...`` over an
  in-memory file system.

Every ``/api`` call needs the bearer token the token endpoint issued.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from airflow_provider_lclstream.backends.base import JobBackend, JobState
from airflow_provider_lclstream.backends.sfapi import SfapiBackend, batch_script
from airflow_provider_lclstream.config.job import JobSpec, ResourceSpec
from airflow_provider_lclstream.exceptions import (
    JobBackendError,
    JobNotFoundError,
    MissingDependencyError,
)

pytest.importorskip("sfapi_client")
from joserfc import jwt  # noqa: E402  (comes with authlib, a dependency of sfapi_client)
from joserfc.jwk import RSAKey  # noqa: E402

CLIENT_ID = "abcdefghij123"
TOKEN = "fake-access-token"
MACHINE = "perlmutter"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


PRIVATE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_JWK = RSAKey.import_key(
    PRIVATE_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
)


class FakeSfApi(BaseHTTPRequestHandler):
    """State lives on the class; the ``server`` fixture resets it."""

    base = ""
    jobs: dict[str, dict[str, Any]] = {}
    tasks: dict[str, dict[str, Any]] = {}
    files: dict[str, bytes] = {}
    scripts: list[str] = []
    queries: list[dict[str, list[str]]] = []
    token_requests = 0

    def log_message(self, *args: Any) -> None:
        pass

    # -- plumbing -------------------------------------------------------------------------
    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, str]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def _api(self) -> tuple[str, dict[str, list[str]]] | None:
        url = urlsplit(self.path)
        if not url.path.startswith("/api/"):
            self._send(404, {"detail": "Not Found"})
            return None
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"detail": "Not authenticated"})
            return None
        return unquote(url.path[len("/api/") :]), parse_qs(url.query)

    def _task(self, result: dict[str, Any]) -> dict[str, Any]:
        task_id = str(len(self.tasks) + 1)
        self.tasks[task_id] = {"polls": 0, "result": result}
        return {"task_id": task_id, "status": "OK", "error": None}

    # -- token ----------------------------------------------------------------------------
    def _token(self) -> None:
        type(self).token_requests += 1
        form = self._form()
        ok = (
            form.get("grant_type") == "client_credentials"
            and form.get("client_assertion_type")
            == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        )
        try:
            claims = jwt.decode(form.get("client_assertion", ""), PUBLIC_JWK).claims
        except Exception:
            ok = False
        else:
            ok = ok and claims.get("iss") == claims.get("sub") == CLIENT_ID
            ok = ok and claims.get("aud") == f"{self.base}/token"
        if not ok:
            return self._send(401, {"error": "invalid_client"})
        self._send(200, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 600})

    # -- verbs ----------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path == "/token":
            return self._token()
        if (api := self._api()) is None:
            return None
        path, _ = api
        if path != f"compute/jobs/{MACHINE}":
            return self._send(404, {"detail": "Not Found"})
        form = self._form()
        script = form["job"]
        self.scripts.append(script)
        assert form["isPath"] == "false"
        opts = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script, re.MULTILINE))
        job_id = str(4242 + len(self.jobs))
        workdir = opts.get("chdir", "/global/homes/l/lcls")
        output = opts["output"].replace("%j", job_id)
        output = output if output.startswith("/") else f"{workdir}/{output}"
        self.jobs[job_id] = {
            "name": opts["job-name"],
            "state": "PENDING",
            "exitcode": "0:0",
            "workdir": workdir,
            "output": output,
            "user": "lcls",
        }
        self._send(200, self._task({"status": "ok", "jobid": job_id, "error": None}))

    def do_GET(self) -> None:  # noqa: N802
        if (api := self._api()) is None:
            return None
        path, query = api
        if path == f"status/{MACHINE}":
            return self._send(200, {"name": MACHINE, "status": "active", "notes": []})
        if path == "account/":
            return self._send(200, {"uid": 1000, "name": "lcls"})
        if path.startswith("tasks/"):
            task_id = path[len("tasks/") :]
            task = self.tasks[task_id]
            task["polls"] += 1
            if task["polls"] == 1 and task_id == "1":  # "new" once: the client polls again
                return self._send(200, {"id": path[6:], "status": "new", "result": None})
            result = json.dumps(task["result"])
            return self._send(200, {"id": path[6:], "status": "completed", "result": result})
        if path == f"compute/jobs/{MACHINE}":
            self.queries.append(query)
            return self._send(200, {"status": "OK", "output": self._rows(query), "error": None})
        if path.startswith(f"utilities/ls/{MACHINE}/"):
            name = path[len(f"utilities/ls/{MACHINE}/") :]
            if name not in self.files:
                return self._send(
                    200, {"status": "ERROR", "entries": [], "error": "No such file or directory"}
                )
            entry = {"perms": "-rw-r-----", "name": name, "size": len(self.files[name])}
            return self._send(200, {"status": "OK", "entries": [entry], "error": None})
        if path.startswith(f"utilities/download/{MACHINE}/"):
            name = path[len(f"utilities/download/{MACHINE}/") :]
            assert query["binary"] == ["true"]
            data = base64.b64encode(self.files[name]).decode()
            return self._send(200, {"status": "OK", "file": data, "is_binary": True})
        self._send(404, {"detail": "Not Found"})

    def do_DELETE(self) -> None:  # noqa: N802
        if (api := self._api()) is None:
            return None
        job_id = api[0].rsplit("/", 1)[-1]
        job = self.jobs.get(job_id)
        if job is None:
            return self._send(200, self._task({"status": "error", "error": "Invalid job id"}))
        if job["state"] in ("PENDING", "RUNNING"):
            job["state"] = "CANCELLED by 1000"
            return self._send(200, self._task({"status": "ok", "error": None}))
        error = "Job/step already completing or completed"
        self._send(200, self._task({"status": "error", "error": error}))

    def _rows(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        sacct = query["sacct"] == ["true"]
        assert query["cached"] == ["false"]
        filters = dict(k.split("=", 1) for k in query.get("kwargs", []))
        rows = []
        for job_id, job in self.jobs.items():
            live = job["state"] in ("PENDING", "RUNNING")
            if not sacct and not live:
                continue  # gone from squeue
            if "jobid" in filters and job_id not in filters["jobid"].split(","):
                continue
            if "name" in filters and job["name"] != filters["name"]:
                continue
            if "user" in filters and job["user"] != filters["user"]:
                continue
            if sacct:
                state = job["state"]
                rows.append(
                    {"jobid": job_id, "jobname": job["name"], "state": state,
                     "exitcode": job["exitcode"], "workdir": job["workdir"], "user": job["user"],
                     "nodelist": job.get("nodelist", "None assigned")}
                )  # fmt: skip
                step = {"jobid": f"{job_id}.batch", "jobname": "batch", "state": state}
                rows.append(step)
            else:
                rows.append(
                    {"jobid": job_id, "name": job["name"], "state": job["state"],
                     "reason": "Priority" if job["state"] == "PENDING" else "None",
                     "work_dir": job["workdir"], "user": job["user"],
                     "nodelist": job.get("nodelist", "")}
                )  # fmt: skip
        return rows


@pytest.fixture
def server() -> Iterator[str]:
    FakeSfApi.jobs, FakeSfApi.tasks, FakeSfApi.files = {}, {}, {}
    FakeSfApi.scripts, FakeSfApi.queries, FakeSfApi.token_requests = [], [], 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeSfApi)
    FakeSfApi.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield FakeSfApi.base
    httpd.shutdown()
    httpd.server_close()


def make_backend(base: str, key: rsa.RSAPrivateKey = PRIVATE_KEY, **kw: Any) -> SfapiBackend:
    return SfapiBackend(
        CLIENT_ID,
        _pem(key),
        api_base_url=f"{base}/api",
        token_url=f"{base}/token",
        poll_interval=0.01,
        **kw,
    )


def test_batch_script_directives() -> None:
    spec = JobSpec(
        name="lcls-recv",
        directory="/pscratch/sd/l/lcls/run 7",
        script="echo hello\n",
        environment={"RUN": "7", "NOTE": "two words"},
        resources=ResourceSpec(
            duration=30, node_count=2, processes_per_node=4, gpu_cores_per_process=1
        ),
        attributes={"qos": "realtime"},
    )  # fmt: skip
    script, output = batch_script(spec, {"account": "lcls", "constraint": "gpu"})
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and lines[-1] == "echo hello"
    for line in (
        "#SBATCH --job-name=lcls-recv",
        '#SBATCH --chdir="/pscratch/sd/l/lcls/run 7"',
        "#SBATCH --time=30",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --exclusive",
        "#SBATCH --account=lcls",
        "#SBATCH --constraint=gpu",
        "#SBATCH --qos=realtime",
        "export NOTE='two words'",
    ):
        assert line in lines, line
    assert output == "/pscratch/sd/l/lcls/run 7/slurm-lcls-recv-%j.out"
    assert max(i for i, x in enumerate(lines) if x.startswith("#SBATCH")) < lines.index(
        "export RUN=7"
    )
    with pytest.raises(JobBackendError, match="shell script"):
        batch_script(
            JobSpec(name="p", script="#!/usr/bin/python3\nprint(1)", environment={"A": "1"})
        )
    # JobSpec refuses such values; the backend checks again for specs built without validation.
    unchecked = JobSpec.model_construct(
        **{**JobSpec(name="p", script="true").__dict__, "attributes": {"qos": "x\n#SBATCH --y"}}
    )
    with pytest.raises(JobBackendError, match="newlines"):
        batch_script(unchecked)


def test_submit_state_log_find_cancel(server: str) -> None:
    backend = make_backend(server)
    assert isinstance(backend, JobBackend)
    spec = JobSpec(name="lcls-ok", directory="/pscratch/sd/l/lcls", script="#!/bin/bash\nexit 0\n")
    job_id = backend.submit(spec)
    assert job_id == "4242"
    assert FakeSfApi.scripts[0].startswith("#!/bin/bash\n#SBATCH --job-name=lcls-ok\n")
    status = backend.state(job_id)
    assert (status.state, status.native_state, status.reason) == (
        JobState.PENDING,
        "PENDING",
        "Priority",
    )
    assert backend.log_tail(job_id) == ("", 0)  # no output file yet

    assert backend.state(job_id).nodes == ()  # pending: no node yet
    from airflow_provider_lclstream.backends.slurm import expand_hostlist

    assert expand_hostlist("None assigned") == []  # sacct's words for a job that never ran
    job = FakeSfApi.jobs[job_id]
    job["state"], job["nodelist"] = "RUNNING", "nid[001234-001235]"
    FakeSfApi.files[job["output"]] = "first line\nsecond é\n".encode()
    running = backend.state(job_id)
    assert running.state is JobState.RUNNING
    # where it runs (squeue's nodelist, expanded): start_buffer's address for a buffer job
    assert running.nodes == ("nid001234", "nid001235")
    assert backend.node_address("nid001234") == "nid001234"
    text, offset = backend.log_tail(job_id)
    assert (text, offset) == ("first line\nsecond é\n", len(FakeSfApi.files[job["output"]]))
    assert backend.log_tail(job_id, offset) == ("", offset)
    assert backend.log_tail(job_id, -3) == ("é\n", offset)  # é: 2 bytes
    assert backend.log_tail(job_id, 0, max_bytes=5) == ("first", 5)

    job["state"], job["exitcode"] = "FAILED", "3:0"
    status = backend.state(job_id)
    assert (status.state, status.exit_code) == (JobState.FAILED, 3)
    assert backend.find("lcls-ok") == job_id  # from sacct, with a start time
    assert any("starttime=" in " ".join(q.get("kwargs", [])) for q in FakeSfApi.queries)
    assert backend.find("other-name") is None
    backend.cancel(job_id)  # already finished: no error

    second = backend.submit(JobSpec(name="lcls-ok", script="sleep 100"))
    assert backend.find("lcls-ok") == second  # from squeue, newest first
    backend.cancel(second)
    assert backend.state(second).state is JobState.CANCELLED
    with pytest.raises(JobNotFoundError):
        backend.state("999")
    with pytest.raises(JobNotFoundError):
        backend.state("../etc")
    with pytest.raises(JobBackendError, match="Invalid job id"):
        backend.cancel("999")


async def test_async_half_and_log_path_from_another_process(server: str) -> None:
    backend = make_backend(server, job_defaults={"account": "lcls"})
    job_id = await backend.asubmit(JobSpec(name="lcls-a", script="exit 0"))
    assert "#SBATCH --account=lcls" in FakeSfApi.scripts[0]
    assert "#SBATCH --chdir" not in FakeSfApi.scripts[0]  # the SF API's submit directory
    job = FakeSfApi.jobs[job_id]
    assert job["output"] == f"/global/homes/l/lcls/slurm-lcls-a-{job_id}.out"
    job["state"] = "COMPLETED"
    FakeSfApi.files[job["output"]] = b"done\n"
    assert (await backend.astate(job_id)).state is JobState.COMPLETED
    tokens = FakeSfApi.token_requests
    # A fresh backend (the triggerer) finds the file from sacct's work dir and the job name.
    other = make_backend(server)
    assert await other.alog_tail(job_id) == ("done\n", 5)
    assert await other.afind("lcls-a") == job_id
    assert FakeSfApi.token_requests == tokens + 1  # one client, one token, for several calls
    await backend.aclose()
    await other.aclose()


def test_bad_key_and_missing_dependency(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = make_backend(server, key=OTHER_KEY)
    with pytest.raises(JobBackendError, match="client id"):
        wrong.state("4242")
    monkeypatch.setitem(__import__("sys").modules, "sfapi_client", None)
    with pytest.raises(MissingDependencyError, match=r"\[sfapi\]"):
        make_backend(server).find("x")
