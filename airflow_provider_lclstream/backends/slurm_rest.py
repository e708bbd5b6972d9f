"""Small client for slurmrestd (REST API v0.0.38 to v0.0.43): submit, state, list, cancel.

Synchronous only: :class:`~.slurm.SlurmBackend` runs it in a worker thread for its async half.
Its errors are :class:`SlurmRestError` (a ``JobBackendError``); job records are normalized by
the SLURM library (:func:`.slurm.normalize_job`).

The API changed shape between versions; the pure functions here hide that:

- v0.0.38 takes ``environment`` as an object and ``script`` beside ``job``; v0.0.39+ take a list
  of ``"K=V"`` strings, and v0.0.41+ take the script inside ``job``.
- ``job_state`` is a string (v0.0.38, v0.0.39) or a list of a base state plus flags (v0.0.40+).
- ``exit_code`` is a raw wait status (an int, or ``{"number": ...}`` in v0.0.39), or an object
  ``{"status": [...], "return_code": {"number": ...}, "signal": {"id": {"number": ...}}}``.
- times are ints or ``{"set": ..., "infinite": ..., "number": ...}``.

Authentication is JWT (headers ``X-SLURM-USER-NAME`` / ``X-SLURM-USER-TOKEN``): a token given to
the client, else ``$SLURM_JWT``, else one minted with ``scontrol token`` (re-minted before expiry).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import httpx

from airflow_provider_lclstream.backends.slurm import (  # records: the SLURM library
    BASE_STATES,
    TERMINAL_STATES,
    SlurmJob,
    exit_status,
    normalize_job,
    number,
    split_state,
)
from airflow_provider_lclstream.exceptions import JobBackendError, JobNotFoundError

SUPPORTED_VERSIONS = tuple(f"v0.0.{minor}" for minor in range(38, 44))
DEFAULT_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
# slurm error numbers (slurm_errno.h)
ESLURM_INVALID_JOB_ID = 2017
ESLURM_ALREADY_DONE = 2021


class SlurmRestError(JobBackendError, RuntimeError):
    """slurmrestd refused a request or answered with errors."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.errors = errors or []


class SlurmJobNotFound(SlurmRestError, JobNotFoundError):
    """slurmctld does not know the job (wrong id, or purged after ``MinJobAge``)."""


#: One job's state, the same across API versions (the SLURM library's record).
JobState = SlurmJob


# --- pure functions: request bodies and response normalization ---------------------------------


def api_minor(version: str) -> int:
    """``"v0.0.41"`` -> 41; unsupported versions fail with the supported list."""
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"unsupported slurmrestd API version {version!r}; use one of {list(SUPPORTED_VERSIONS)}"
        )
    return int(version.rsplit(".", 1)[1])


def job_environment(env: Mapping[str, str] | list[str] | None, version: str) -> Any:
    """The job environment in the shape ``version`` wants: object (v0.0.38) or ``K=V`` list."""
    if env is None:
        pairs: dict[str, str] = dict(DEFAULT_ENVIRONMENT)
    elif isinstance(env, Mapping):
        pairs = {str(k): str(v) for k, v in env.items()}
    else:
        pairs = {}
        for item in env:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ValueError(f"environment entry {item!r} is not of the form KEY=VALUE")
            pairs[key] = value
    if api_minor(version) == 38:
        return pairs
    return [f"{k}={v}" for k, v in pairs.items()]


def build_submit_body(script: str, job: Mapping[str, Any], version: str) -> dict[str, Any]:
    """The ``POST .../job/submit`` body; ``job`` uses the v0.0.38+ field names.

    ``environment`` may be a dict or a ``K=V`` list; a minimal ``PATH`` is sent when it is absent
    (v0.0.38 rejects a job without environment).
    """
    desc = dict(job)
    desc["environment"] = job_environment(desc.get("environment"), version)
    if api_minor(version) >= 41:
        desc["script"] = script
        return {"job": desc}
    return {"script": script, "job": desc}


def format_errors(errors: list[dict[str, Any]]) -> str:
    """A response's ``errors[]`` as one line (errno, error_code or error_number by version)."""
    parts = []
    for e in errors:
        text = e.get("description") or e.get("error") or "unknown error"
        num = e.get("error_number", e.get("error_code", e.get("errno")))
        source = e.get("source")
        parts.append(f"{text} [{num}{', ' + source if source else ''}]" if num else str(text))
    return "; ".join(parts)


def _error_numbers(errors: list[dict[str, Any]]) -> set[int]:
    out = set()
    for e in errors:
        num = e.get("error_number", e.get("error_code", e.get("errno")))
        if isinstance(num, int):
            out.add(num)
    return out


def parse_submit_response(body: Mapping[str, Any]) -> str:
    """The job id of a ``job/submit`` answer (top level, or ``result`` in v0.0.40+)."""
    errors = list(body.get("errors") or [])
    job_id = body.get("job_id")
    if job_id is None and isinstance(body.get("result"), Mapping):
        job_id = body["result"].get("job_id")
    if errors or job_id is None:
        raise SlurmRestError(f"job submit failed: {format_errors(errors) or body!r}", errors=errors)
    return str(job_id)


def parse_state_response(body: Mapping[str, Any], job_id: str) -> JobState:
    """The :class:`JobState` of ``job_id`` from a ``GET .../job/{id}`` answer."""
    errors = list(body.get("errors") or [])
    jobs = [j for j in body.get("jobs") or [] if str(j.get("job_id")) == str(job_id)]
    if not jobs:
        cls = (
            SlurmJobNotFound
            if not errors or ESLURM_INVALID_JOB_ID in _error_numbers(errors)
            else SlurmRestError
        )
        raise cls(f"job {job_id}: {format_errors(errors) or 'not in the answer'}", errors=errors)
    return normalize_job(jobs[0])


def parse_jobs_response(body: Mapping[str, Any]) -> list[JobState]:
    """Every record of a ``GET .../jobs`` answer as :class:`JobState`; errors raise."""
    errors = list(body.get("errors") or [])
    if errors:
        raise SlurmRestError(f"job list: {format_errors(errors)}", errors=errors)
    return [normalize_job(job) for job in body.get("jobs") or []]


def mint_token(user: str, lifespan: int = 3600, scontrol: str = "scontrol") -> str:
    """A JWT from ``scontrol token`` (another user's only for root or SlurmUser)."""
    exe = shutil.which(scontrol)
    if exe is None:
        raise SlurmRestError(
            f"cannot mint a SLURM token: {scontrol!r} not found; "
            "install slurm-client or pass token="
        )
    proc = subprocess.run(
        [exe, "token", f"username={user}", f"lifespan={lifespan}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.startswith("SLURM_JWT="):
        raise SlurmRestError(
            f"`scontrol token username={user}` failed (rc={proc.returncode}): "
            f"{(proc.stderr or out).strip()[-500:]}"
        )
    return out.removeprefix("SLURM_JWT=")


# --- clients ------------------------------------------------------------------------------------


class _SlurmRestBase:
    """Settings, token handling and response checks."""

    def __init__(
        self,
        url: str,
        *,
        api_version: str = "v0.0.38",
        user: str | None = None,
        token: str | None = None,
        token_lifespan: int = 3600,
        scontrol: str = "scontrol",
        timeout: float = 30.0,
        verify: bool | str = True,
    ) -> None:
        api_minor(api_version)
        self.url = url.rstrip("/")
        self.api_version = api_version
        self.user = user or getpass.getuser()
        self.token_lifespan = token_lifespan
        self.scontrol = scontrol
        self.timeout = timeout
        self.verify = verify
        self._token = token or os.environ.get("SLURM_JWT") or None
        self._mint = self._token is None
        self._expires = 0.0

    def _path(self, tail: str) -> str:
        return f"/slurm/{self.api_version}/{tail}"

    def _token_sync(self) -> str:
        if self._token is None or (self._mint and time.time() > self._expires):
            self._token = mint_token(self.user, self.token_lifespan, self.scontrol)
            self._expires = time.time() + self.token_lifespan - 60
        return self._token

    def _headers(self, token: str) -> dict[str, str]:
        return {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": token}

    def _body(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code in (401, 403):
            raise SlurmRestError(
                f"{what}: slurmrestd at {self.url} rejected the token for user {self.user!r} "
                f"(HTTP {response.status_code}); check the token, its user, and that slurmrestd "
                "runs with SLURM_JWT=daemon",
                status_code=response.status_code,
            )
        try:
            body = response.json()
        except ValueError as err:
            raise SlurmRestError(
                f"{what}: HTTP {response.status_code} from {response.request.url}, not JSON: "
                f"{response.text[:300]!r}",
                status_code=response.status_code,
            ) from err
        if not isinstance(body, dict):
            raise SlurmRestError(
                f"{what}: unexpected answer {body!r}", status_code=response.status_code
            )
        return body

    def _cancel_result(self, response: httpx.Response, job_id: str) -> None:
        body = self._body(response, f"cancel job {job_id}")
        errors = list(body.get("errors") or [])
        if not errors or _error_numbers(errors) <= {ESLURM_ALREADY_DONE}:
            return
        cls = (
            SlurmJobNotFound if ESLURM_INVALID_JOB_ID in _error_numbers(errors) else SlurmRestError
        )
        raise cls(f"cancel job {job_id}: {format_errors(errors)}", errors=errors)


class SlurmRestClient(_SlurmRestBase):
    """Synchronous slurmrestd client; use as a context manager or call :meth:`close`."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._client = httpx.Client(base_url=self.url, timeout=self.timeout, verify=self.verify)

    def _request(self, method: str, tail: str, **kwargs: Any) -> httpx.Response:
        headers = self._headers(self._token_sync())
        return self._client.request(method, self._path(tail), headers=headers, **kwargs)

    def ping(self) -> dict[str, Any]:
        """``GET .../ping``: raises when slurmrestd or slurmctld does not answer."""
        body = self._body(self._request("GET", "ping"), "ping")
        if body.get("errors"):
            raise SlurmRestError(f"ping: {format_errors(body['errors'])}", errors=body["errors"])
        return body

    def detect_version(self) -> str:
        """Switch to the newest supported API version this slurmrestd serves; return it."""
        for version in reversed(SUPPORTED_VERSIONS):
            self.api_version = version
            try:
                self.ping()
            except SlurmRestError as err:
                if err.status_code == 404:
                    continue
                raise
            return version
        raise SlurmRestError(
            f"slurmrestd at {self.url} serves none of {list(SUPPORTED_VERSIONS)}; "
            "start it with -s openapi/v0.0.4x (or set api_version)"
        )

    def submit(self, script: str, job: Mapping[str, Any]) -> str:
        """Submit a batch script; returns the job id."""
        body = build_submit_body(script, job, self.api_version)
        return parse_submit_response(
            self._body(self._request("POST", "job/submit", json=body), "submit")
        )

    def jobs(self) -> list[JobState]:
        """Every job slurmctld still knows (finished ones until ``MinJobAge``)."""
        return parse_jobs_response(self._body(self._request("GET", "jobs"), "job list"))

    def state(self, job_id: str | int) -> JobState:
        """The job's normalized state; :class:`SlurmJobNotFound` once slurmctld forgot it."""
        response = self._request("GET", f"job/{job_id}")
        return parse_state_response(self._body(response, f"state of job {job_id}"), str(job_id))

    def node(self, name: str) -> dict[str, Any]:
        """One node's record (``name``, ``address``, ``hostname``, ``state``, ...)."""
        body = self._body(self._request("GET", f"node/{name}"), f"node {name}")
        nodes = body.get("nodes") or []
        if not nodes:
            raise SlurmRestError(f"slurmrestd knows no node {name!r}")
        return dict(nodes[0])

    def cancel(self, job_id: str | int, signal: str | None = None) -> None:
        """Cancel (or signal) a job; a job that already finished is not an error."""
        params = {"signal": signal} if signal else None
        self._cancel_result(self._request("DELETE", f"job/{job_id}", params=params), str(job_id))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SlurmRestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "BASE_STATES",
    "SUPPORTED_VERSIONS",
    "TERMINAL_STATES",
    "JobState",
    "SlurmJobNotFound",
    "SlurmRestClient",
    "SlurmRestError",
    "api_minor",
    "build_submit_body",
    "exit_status",
    "format_errors",
    "job_environment",
    "mint_token",
    "normalize_job",
    "number",
    "parse_jobs_response",
    "parse_state_response",
    "parse_submit_response",
    "split_state",
]
