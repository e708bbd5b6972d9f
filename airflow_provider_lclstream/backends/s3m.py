"""OLCF S3M's SLURM proxy as a job backend (httpx).

S3M forwards slurmrestd's API per resource (cluster): ``POST /slurm/v0.0.43/<resource>/job/submit``,
``GET|DELETE /slurm/v0.0.43/<resource>/job/<id>``, with the raw token in ``Authorization``.
Bodies are slurmrestd's, parsed with :mod:`.slurm_rest`'s functions. S3M does not serve job
output, so ``log_tail`` returns nothing; ``find`` uses ``GET .../jobs`` when the proxy has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_lclstream.backends.base import (
    DEFAULT_LOG_CHUNK,
    BaseJobBackend,
    JobStatus,
)
from airflow_provider_lclstream.backends.slurm import (
    newest_job,
    slurm_job_description,
    status_from_native,
)
from airflow_provider_lclstream.exceptions import JobBackendError, JobNotFoundError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_lclstream.config.job import JobSpec


class S3mBackend(BaseJobBackend):
    """SLURM jobs on ``resource`` through the S3M at ``base_url``."""

    name = "s3m"

    def __init__(
        self,
        base_url: str,
        token: Any,
        resource: str,
        api_version: str = "v0.0.43",
        verify: bool | str = True,
        timeout: float = 30.0,
        job_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token.get_secret_value() if hasattr(token, "get_secret_value") else token
        self.resource = resource
        self.api_version = api_version
        self.verify = verify
        self.timeout = timeout
        self.job_defaults = dict(job_defaults or {})
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"S3mBackend(base_url={self.base_url!r}, resource={self.resource!r})"

    def _path(self, tail: str) -> str:
        return f"/slurm/{self.api_version}/{self.resource}/{tail}"

    def _kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "headers": {"Authorization": str(self._token)},
            "timeout": self.timeout,
            "verify": self.verify,
        }

    def _sync(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(**self._kwargs())
        return self._client

    def _async(self) -> httpx.AsyncClient:
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(**self._kwargs())
        return self._aclient

    @staticmethod
    def _json(response: httpx.Response, what: str, job_id: str | None = None) -> dict[str, Any]:
        if response.status_code == 404 and job_id is not None:
            raise JobNotFoundError(f"S3M does not know job {job_id}")
        if response.status_code in (401, 403):
            raise JobBackendError(
                f"S3M refused {what} (HTTP {response.status_code}): check the connection's token"
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error or not isinstance(body, dict):
            raise JobBackendError(f"S3M {what}: HTTP {response.status_code}: {response.text[:500]}")
        return body

    def _submit_body(self, spec: JobSpec) -> dict[str, Any]:
        from airflow_provider_lclstream.backends.slurm_rest import build_submit_body

        minor = int(self.api_version.rsplit(".", 1)[1])
        desc = slurm_job_description(spec, minor, self.job_defaults)
        return build_submit_body(spec.script, desc, self.api_version)

    def _submitted(self, body: dict[str, Any]) -> str:
        from airflow_provider_lclstream.backends.slurm_rest import parse_submit_response

        return parse_submit_response(body)

    def _status(self, body: dict[str, Any], job_id: str) -> JobStatus:
        from airflow_provider_lclstream.backends.slurm_rest import (
            SlurmJobNotFound,
            parse_state_response,
        )

        try:
            native = parse_state_response(body, job_id)
        except SlurmJobNotFound as err:
            raise JobNotFoundError(f"S3M job {job_id}: {err}") from err
        return status_from_native(job_id, native)

    def submit(self, spec: JobSpec) -> str:
        response = self._sync().post(self._path("job/submit"), json=self._submit_body(spec))
        return self._submitted(self._json(response, "job submit"))

    async def asubmit(self, spec: JobSpec) -> str:
        body = self._submit_body(spec)
        response = await self._async().post(self._path("job/submit"), json=body)
        return self._submitted(self._json(response, "job submit"))

    def state(self, job_id: str) -> JobStatus:
        response = self._sync().get(self._path(f"job/{job_id}"))
        return self._status(self._json(response, f"state of job {job_id}", job_id), job_id)

    async def astate(self, job_id: str) -> JobStatus:
        response = await self._async().get(self._path(f"job/{job_id}"))
        return self._status(self._json(response, f"state of job {job_id}", job_id), job_id)

    def cancel(self, job_id: str) -> None:
        self._json(self._sync().delete(self._path(f"job/{job_id}")), f"cancel of {job_id}", job_id)

    async def acancel(self, job_id: str) -> None:
        response = await self._async().delete(self._path(f"job/{job_id}"))
        self._json(response, f"cancel of {job_id}", job_id)

    def log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        return "", max(offset, 0)

    async def alog_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        return "", max(offset, 0)

    def find(self, name: str) -> str | None:
        from airflow_provider_lclstream.backends.slurm_rest import normalize_job

        response = self._sync().get(self._path("jobs"))
        if response.status_code == 404:  # this proxy does not list jobs: no retry lookup
            return None
        body = self._json(response, "job list")
        return newest_job(map(normalize_job, body.get("jobs") or []), name, None)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        self.close()
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
