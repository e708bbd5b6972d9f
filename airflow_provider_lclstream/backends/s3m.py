"""OLCF S3M's SLURM proxy as a job backend (httpx).

S3M forwards slurmrestd's API per resource (cluster): ``POST /slurm/v0.0.43/<resource>/job/submit``,
``GET|DELETE /slurm/v0.0.43/<resource>/job/<id>``, with the raw token in ``Authorization``.
Bodies are slurmrestd's, built and read with the SLURM library (:mod:`.slurm`) and
:mod:`.slurm_rest`'s functions. S3M does not serve job output, so ``log_tail`` returns nothing;
``find`` uses ``GET .../jobs`` when the proxy has it.
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
    backend_error,
    newest_job,
    normalize_job,
    secret_value,
    slurm_job_description,
    status_from_native,
    with_shebang,
)
from airflow_provider_lclstream.backends.slurm_rest import (
    build_submit_body,
    parse_state_response,
    parse_submit_response,
)
from airflow_provider_lclstream.exceptions import JobBackendError, JobNotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_provider_lclstream.config.job import JobSpec


class S3mBackend(BaseJobBackend):
    """SLURM jobs on ``resource`` through the S3M at ``base_url``.

    Only the sync half is written (one ``httpx.Client``); the async half is
    :class:`~.base.BaseJobBackend`'s, the same calls in a worker thread. Every error is a
    :class:`JobBackendError` naming the S3M, the call and the job.
    """

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
        self._token = secret_value(token)
        self.resource = resource
        self.api_version = api_version
        self.verify = verify
        self.timeout = timeout
        self.job_defaults = dict(job_defaults or {})
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"S3mBackend(base_url={self.base_url!r}, resource={self.resource!r})"

    def _path(self, tail: str) -> str:
        return f"/slurm/{self.api_version}/{self.resource}/{tail}"

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.base_url,
                headers={"Authorization": str(self._token)},
                timeout=self.timeout,
                verify=self.verify,
            )
        return self._client

    def _call(self, what: str, op: Callable[[httpx.Client], Any]) -> Any:
        """Run one request; every failure becomes a JobBackendError naming the call."""
        try:
            return op(self._http())
        except Exception as err:
            raise backend_error(err, f"S3M {self.base_url} ({self.resource})", what) from err

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
            raise JobBackendError(
                f"S3M {what}: HTTP {response.status_code}: {response.text[:500]!r}; "
                "retry later, or ask OLCF if it persists"
            )
        return body

    def submit(self, spec: JobSpec) -> str:
        minor = int(self.api_version.rsplit(".", 1)[1])
        desc = slurm_job_description(spec, minor, self.job_defaults)
        body = build_submit_body(with_shebang(spec.script), desc, self.api_version)
        what = f"submit of job {spec.name!r}"

        def submit(client: httpx.Client) -> str:
            response = client.post(self._path("job/submit"), json=body)
            return parse_submit_response(self._json(response, what))

        return str(self._call(what, submit))

    def state(self, job_id: str) -> JobStatus:
        what = f"state of job {job_id}"

        def state(client: httpx.Client) -> JobStatus:
            body = self._json(client.get(self._path(f"job/{job_id}")), what, job_id)
            return status_from_native(job_id, parse_state_response(body, job_id))

        return self._call(what, state)  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> None:
        what = f"cancel of job {job_id}"
        self._call(what, lambda c: self._json(c.delete(self._path(f"job/{job_id}")), what, job_id))

    def log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        return "", max(offset, 0)

    def find(self, name: str) -> str | None:
        what = f"find job {name!r}"

        def find(client: httpx.Client) -> str | None:
            response = client.get(self._path("jobs"))
            if response.status_code == 404:  # this proxy does not list jobs: no retry lookup
                return None
            body = self._json(response, "job list")
            return newest_job(map(normalize_job, body.get("jobs") or []), name, None)

        return self._call(what, find)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
