"""NERSC's Superfacility API (SF API) as a job backend, through ``sfapi_client.AsyncClient``.

The client authenticates with OAuth2 client credentials: a JWT signed with the SF API client's
private key (PEM or JWK) is exchanged at the token URL for a bearer token. Endpoints used, all
under ``api_base_url`` (default ``https://api.nersc.gov/api/v1.2``):

- ``POST compute/jobs/<machine>`` (form ``job=<script>``, ``isPath=false``) returns a task;
  ``GET tasks/<id>`` until it is done gives the SLURM job id (``compute.submit_job``);
- ``GET compute/jobs/<machine>?sacct=<bool>&kwargs=jobid=<id>`` runs squeue (live jobs) or
  sacct (finished ones); ``kwargs=name=...``, ``user=...`` serve :meth:`SfapiBackend.find`;
- ``DELETE compute/jobs/<machine>/<id>`` cancels (a task as well, polled to its end);
- ``GET utilities/ls/<machine>/<path>`` and ``utilities/download/<machine>/<path>`` read the
  job's output file for ``log_tail``.

The batch script carries its resources as ``#SBATCH`` lines (:func:`.sbatch.batch_script`,
the SLURM library's, with job names checked as plain names). Output goes to
``slurm-<name>-%j.out`` in the job's directory (the spec's, else ``job_defaults["chdir"]``, else
the SF API's submit directory, read back from squeue/sacct's work dir). A process that did not
submit the job (the triggerer) finds the file the same way, unless the spec's attributes set
another ``output``.

sfapi_client's clients are async, so the async half owns the work. The base class's derived
sync half would run it on a new event loop per call, where a shared client cannot live: a sync
call (``submit``, ``state``...) uses a client of its own, closed at the end; the async calls
share one client per event loop, closed by :meth:`SfapiBackend.aclose`. Both go through one
operation each (``_submit``, ``_state``...), so nothing is written twice.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import time
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_lclstream.backends import sbatch
from airflow_provider_lclstream.backends.base import (
    DEFAULT_LOG_CHUNK,
    BaseJobBackend,
    JobStatus,
    decode_log,
    log_start,
    run_sync,
)
from airflow_provider_lclstream.backends.slurm import (
    OUTPUT_PATTERN,
    backend_error,
    expand_hostlist,
    expand_output_path,
    job_status,
    parse_exit_code,
    secret_value,
)
from airflow_provider_lclstream.config.job import check_name
from airflow_provider_lclstream.exceptions import (
    JobBackendError,
    JobNotFoundError,
    MissingDependencyError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from airflow_provider_lclstream.config.job import JobSpec

T = TypeVar("T")

DEFAULT_MACHINE = "perlmutter"
_JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")
_TASK_DONE = {"completed", "failed", "cancelled"}


# -- the batch script ------------------------------------------------------------------------


def batch_script(spec: JobSpec, defaults: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The SLURM library's batch script (:func:`.sbatch.batch_script`); names must be plain."""
    check_name(spec.name or "lclstream", "job name")
    return sbatch.batch_script(spec, defaults)


# -- helpers -----------------------------------------------------------------------------------


def _check_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise JobNotFoundError(f"{job_id!r} is not a SLURM job id")
    return job_id


def _error(err: Exception, what: str) -> JobBackendError:
    """One JobBackendError for the many ways an SF API call fails, naming the call ``what``."""
    if isinstance(err, JobBackendError):
        text = str(err)
        if what in text:
            return err
        kind = JobNotFoundError if isinstance(err, JobNotFoundError) else JobBackendError
        return kind(f"SF API {what}: {text.removeprefix('SF API ')}")
    import httpx

    if isinstance(err, httpx.HTTPStatusError):
        code = err.response.status_code
        hint = ": check the client id and private key" if code in (401, 403) else ""
        return JobBackendError(f"SF API {what}: HTTP {code} {err.response.text[:300]}{hint}")
    if isinstance(err, httpx.HTTPError):
        return backend_error(err, "SF API", what)
    message = getattr(err, "message", None) or getattr(err, "description", None) or str(err)
    if type(err).__module__.startswith("authlib"):
        return JobBackendError(
            f"SF API token request failed ({what}): {type(err).__name__}: {message}; "
            "check the client id, the private key and that the client is not expired"
        )
    return JobBackendError(f"SF API {what}: {type(err).__name__}: {message}")


def _body(response: Any, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise JobBackendError(f"SF API {what}: unexpected reply {response.text[:300]!r}")
    if str(body.get("status") or "").upper() == "ERROR":
        raise JobBackendError(f"SF API {what}: {body.get('error')}")
    return body


class SfapiBackend(BaseJobBackend):
    """SLURM jobs on a NERSC machine (default ``perlmutter``) through the SF API.

    ``private_key`` (str or SecretStr) is the client's PEM or JWK. ``api_base_url`` and
    ``token_url`` default to sfapi_client's (NERSC). ``user`` (for ``find``) defaults to the
    client's owner (``GET account/``). ``job_defaults`` are sbatch options for every job.
    """

    name = "sfapi"

    def __init__(
        self,
        client_id: str,
        private_key: Any,
        machine: str = DEFAULT_MACHINE,
        *,
        api_base_url: str | None = None,
        token_url: str | None = None,
        user: str | None = None,
        job_defaults: Mapping[str, Any] | None = None,
        poll_interval: float = 1.0,
        task_timeout: float = 300.0,
        find_days: int = 7,
    ) -> None:
        self.client_id = client_id
        self._key = str(secret_value(private_key))
        self.machine = machine
        self.api_base_url = api_base_url.rstrip("/") if api_base_url else None
        self.token_url = token_url
        self.user = user
        self.job_defaults = dict(job_defaults or {})
        self.poll_interval = poll_interval
        self.task_timeout = task_timeout
        self.find_days = find_days
        self._aclient: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outputs: dict[str, str] = {}  # job id -> output path (may be relative)

    def __repr__(self) -> str:
        return f"SfapiBackend(client_id={self.client_id!r}, machine={self.machine!r})"

    # -- clients ------------------------------------------------------------------------------
    def _new_client(self) -> Any:
        try:
            from sfapi_client import AsyncClient
        except ImportError as err:
            raise MissingDependencyError(
                "sfapi-client", "sfapi", "the NERSC SF API backend"
            ) from err
        kwargs: dict[str, Any] = {"client_id": self.client_id, "secret": self._key}
        if self.api_base_url:
            kwargs["api_base_url"] = self.api_base_url
        if self.token_url:
            kwargs["token_url"] = self.token_url
        return AsyncClient(**kwargs)

    async def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._loop is not loop:
            self._aclient, self._loop = self._new_client(), loop
        return self._aclient

    async def _with_client(self, op: Callable[[Any], Awaitable[T]], what: str) -> T:
        try:
            return await op(await self._client())
        except Exception as err:
            wrapped = _error(err, what)
            if wrapped is err:
                raise
            raise wrapped from err

    async def _with_own_client(self, op: Callable[[Any], Awaitable[T]], what: str) -> T:
        client = self._new_client()
        try:
            return await op(client)
        except Exception as err:
            wrapped = _error(err, what)
            if wrapped is err:
                raise
            raise wrapped from err
        finally:
            await client.close()

    # -- SF API calls -------------------------------------------------------------------------
    async def _rows(self, client: Any, sacct: bool, *kwargs: str) -> list[dict[str, Any]]:
        """squeue (``sacct=False``) or sacct rows; ``kwargs`` are ``key=value`` filters."""
        params = {"sacct": sacct, "cached": False, "kwargs": list(kwargs)}
        response = await client.get(f"compute/jobs/{self.machine}", params)
        output = _body(response, "sacct" if sacct else "squeue").get("output") or []
        return [row for row in output if isinstance(row, dict)]

    async def _wait_task(self, client: Any, task_id: str, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.task_timeout
        while True:
            task = _body(await client.get(f"tasks/{task_id}"), what)
            status = str(task.get("status") or "").lower()
            if status in _TASK_DONE:
                try:
                    result = json.loads(task.get("result") or "{}")
                except ValueError:
                    result = {"error": task.get("result")}
                if status != "completed" or str(result.get("status", "")).lower() == "error":
                    raise JobBackendError(f"SF API {what}: task {task_id} {status}: {result}")
                return result if isinstance(result, dict) else {}
            if time.monotonic() > deadline:
                raise JobBackendError(
                    f"SF API {what}: task {task_id} not done in {self.task_timeout}s"
                )
            await asyncio.sleep(self.poll_interval)

    async def _user_name(self, client: Any) -> str:
        if self.user is None:
            self.user = str(_body(await client.get("account/"), "account").get("name") or "")
        return self.user

    async def _record(self, client: Any, job_id: str) -> dict[str, Any] | None:
        """The job as squeue sees it while it is queued or running, else as sacct does."""
        live = next(
            (
                r
                for r in await self._rows(client, False, f"jobid={job_id}")
                if str(r.get("jobid")) == job_id
            ),
            None,
        )
        if live is not None and not job_status(job_id, str(live.get("state") or "")).is_final:
            return {
                "state": live.get("state"),
                "reason": live.get("reason"),
                "name": live.get("name"),
                "workdir": live.get("work_dir"),
                "nodelist": live.get("nodelist"),
            }
        rows = await self._rows(client, True, f"jobid={job_id}")
        done = next((r for r in rows if str(r.get("jobid")) == job_id), None)
        if done is not None:
            code, sig = parse_exit_code(done.get("exitcode"))
            return {
                "state": done.get("state"),
                "exit_code": code,
                "signal": sig,
                "name": done.get("jobname"),
                "workdir": done.get("workdir"),
                "nodelist": done.get("nodelist"),
            }
        if live is not None:
            return {
                "state": live.get("state"),
                "name": live.get("name"),
                "workdir": live.get("work_dir"),
            }
        return None

    def _remember_output(self, job_id: str, record: Mapping[str, Any]) -> None:
        path = self._outputs.get(job_id)
        name = str(record.get("name") or "lclstream")
        if path is None:
            pattern = self.job_defaults.get("output") or OUTPUT_PATTERN.format(name=name)
            path = expand_output_path(str(pattern), job_id, name, self.user)
        workdir = record.get("workdir")
        if not path.startswith("/") and workdir:
            path = f"{str(workdir).rstrip('/')}/{path}"
        self._outputs[job_id] = path

    # -- operations (each takes a client) ----------------------------------------------------
    async def _submit(self, client: Any, spec: JobSpec) -> str:
        script, output = batch_script(spec, self.job_defaults)
        compute = await client.compute(self.machine)
        job = await compute.submit_job(script)
        job_id = str(job.jobid)
        name = spec.name or "lclstream"
        self._outputs[job_id] = expand_output_path(output, job_id, name, self.user)
        return job_id

    async def _state(self, client: Any, job_id: str) -> JobStatus:
        record = await self._record(client, _check_id(job_id))
        if record is None:
            raise JobNotFoundError(
                f"SF API: neither squeue nor sacct on {self.machine} knows job {job_id}"
            )
        self._remember_output(job_id, record)
        return job_status(
            job_id,
            str(record.get("state") or "UNKNOWN"),
            exit_code=record.get("exit_code"),
            signal=record.get("signal"),
            reason=record.get("reason"),
            nodes=expand_hostlist(str(record.get("nodelist") or "")),  # squeue's and sacct's
        )

    async def _cancel(self, client: Any, job_id: str) -> None:
        response = await client.delete(f"compute/jobs/{self.machine}/{_check_id(job_id)}")
        body = _body(response, f"cancel of job {job_id}")
        if body.get("task_id"):
            try:
                await self._wait_task(client, str(body["task_id"]), f"cancel of job {job_id}")
            except JobBackendError as err:
                if "already complet" not in str(err):  # scancel of a finished job: nothing to do
                    raise

    async def _log_tail(
        self, client: Any, job_id: str, offset: int, max_bytes: int
    ) -> tuple[str, int]:
        path = self._outputs.get(_check_id(job_id))
        if path is None or not path.startswith("/"):
            record = await self._record(client, job_id)
            if record is not None:
                self._remember_output(job_id, record)
            path = self._outputs.get(job_id)
        if path is None or not path.startswith("/"):
            return "", max(offset, 0)
        try:
            listing = _body(await client.get(f"utilities/ls/{self.machine}/{path}"), "ls")
        except JobBackendError as err:
            if "No such file" in str(err):  # not written yet (job pending) or removed
                return "", max(offset, 0)
            raise
        entries = listing.get("entries") or []
        if not entries:
            return "", max(offset, 0)
        size = int(entries[0].get("size") or 0)
        start = log_start(size, offset)
        if start >= size:
            return "", start
        params = {"binary": True}
        download = _body(
            await client.get(f"utilities/download/{self.machine}/{path}", params), "download"
        )
        raw = download.get("file") or ""
        data = base64.b64decode(raw) if download.get("is_binary") else str(raw).encode()
        return decode_log(data[start : start + max_bytes], start)

    async def _find(self, client: Any, name: str) -> str | None:
        check_name(name, "job name")
        user = await self._user_name(client)
        who = [f"user={user}"] if user else []
        rows = [
            r
            for r in await self._rows(client, False, f"name={name}", *who)
            if r.get("name") == name
        ]
        if not rows:
            since = (dt.date.today() - dt.timedelta(days=self.find_days)).isoformat()
            rows = [
                r
                for r in await self._rows(client, True, f"name={name}", *who, f"starttime={since}")
                if r.get("jobname") == name
            ]
        ids = [str(r.get("jobid")) for r in rows if _JOB_ID.fullmatch(str(r.get("jobid")))]
        ids = [i for i in ids if "_" not in i] or ids
        return max(ids, key=lambda i: [int(p) for p in i.split("_")], default=None)

    # -- the protocol -------------------------------------------------------------------------
    async def asubmit(self, spec: JobSpec) -> str:
        return await self._with_client(lambda c: self._submit(c, spec), f"submit {spec.name!r}")

    def submit(self, spec: JobSpec) -> str:
        return run_sync(
            self._with_own_client(lambda c: self._submit(c, spec), f"submit {spec.name!r}")
        )

    async def astate(self, job_id: str) -> JobStatus:
        return await self._with_client(lambda c: self._state(c, job_id), f"state of job {job_id}")

    def state(self, job_id: str) -> JobStatus:
        return run_sync(
            self._with_own_client(lambda c: self._state(c, job_id), f"state of job {job_id}")
        )

    async def acancel(self, job_id: str) -> None:
        await self._with_client(lambda c: self._cancel(c, job_id), f"cancel of job {job_id}")

    def cancel(self, job_id: str) -> None:
        run_sync(
            self._with_own_client(lambda c: self._cancel(c, job_id), f"cancel of job {job_id}")
        )

    async def alog_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        return await self._with_client(
            lambda c: self._log_tail(c, job_id, offset, max_bytes), f"log of job {job_id}"
        )

    def log_tail(
        self, job_id: str, offset: int = 0, max_bytes: int = DEFAULT_LOG_CHUNK
    ) -> tuple[str, int]:
        return run_sync(
            self._with_own_client(
                lambda c: self._log_tail(c, job_id, offset, max_bytes), f"log of job {job_id}"
            )
        )

    async def afind(self, name: str) -> str | None:
        return await self._with_client(lambda c: self._find(c, name), f"find job {name!r}")

    def find(self, name: str) -> str | None:
        return run_sync(self._with_own_client(lambda c: self._find(c, name), f"find job {name!r}"))

    async def aclose(self) -> None:
        client, self._aclient, self._loop = self._aclient, None, None
        if client is not None:
            await client.close()

    def close(self) -> None:
        """Drop the async client; it can only be closed from its loop (:meth:`aclose`)."""
        self._aclient, self._loop = None, None


__all__ = ["DEFAULT_MACHINE", "SfapiBackend", "batch_script"]
