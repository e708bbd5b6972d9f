"""Post ARP job counters and run parameters to the LCLS Elog, with plain ``httpx`` (no Airflow).

ARP starts a batch job with ``JID_UPDATE_COUNTERS`` (a URL) and ``Authorization`` (a header
value) in its environment. A job reports progress by POSTing a JSON list
``[{"key": "<name>", "value": "<text>"}, ...]`` to that URL; each post replaces the counters the
Elog shows in the job's row, so post the full set every time. Run parameters go to the logbook's
``add_run_params`` web service as a JSON object of name -> text for one run.

:class:`airflow_provider_lclstream.hooks.elog.ElogHook` is the Airflow face of this client.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from airflow_provider_lclstream.exceptions import LCLStreamError

COUNTERS_ENV = "JID_UPDATE_COUNTERS"
AUTHORIZATION_ENV = "Authorization"
#: ``{base}``: the logbook URL (``https://pswww.slac.stanford.edu/ws-auth/lgbk``).
RUN_PARAMS_TEMPLATE = "{base}/lgbk/{experiment}/ws/add_run_params?run_num={run}"

Counters = Mapping[str, Any] | Iterable[tuple[str, Any]]


class ElogError(LCLStreamError):
    """The Elog refused a post or could not be reached (the message never holds credentials)."""


class _Transient(ElogError):
    """A failure worth another try: no answer, or a server error."""


def format_counters(counters: Counters) -> list[dict[str, str]]:
    """``{"a": 1}`` or ``[("a", 1)]`` -> ``[{"key": "a", "value": "1"}]`` (ARP shows text)."""
    items = counters.items() if isinstance(counters, Mapping) else counters
    out = []
    for key, value in items:
        if not isinstance(key, str) or not key:
            raise ValueError(f"counter keys must be non-empty strings, got {key!r}")
        out.append({"key": key, "value": "" if value is None else str(value)})
    return out


@dataclass(frozen=True)
class ElogClient:
    """Talks to the ARP counters URL and (optionally) the logbook's run-parameter service.

    ``authorization`` is sent verbatim as the ``Authorization`` header (ARP gives the whole header
    value); it never appears in ``repr`` or error messages. Transient failures (connection errors,
    HTTP 5xx) are retried ``retries`` times, waiting ``backoff`` s, then twice that, ...
    """

    counters_url: str | None = None
    base_url: str | None = None
    authorization: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    verify: bool | str = True
    retries: int = 2
    backoff: float = 0.5
    run_params_template: str = RUN_PARAMS_TEMPLATE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ElogClient:
        """Read ``JID_UPDATE_COUNTERS`` and ``Authorization`` (``overrides`` win when not None)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "counters_url": env.get(COUNTERS_ENV) or None,
            "authorization": env.get(AUTHORIZATION_ENV) or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        return headers

    def _post(self, url: str, payload: Any, what: str) -> httpx.Response:
        """POST with ``tenacity`` retrying transient failures (no answer, HTTP 5xx)."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.backoff, max=5.0),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            return retrying(self._post_once, url, payload, what)
        except _Transient as err:
            raise ElogError(
                f"cannot post the {what} to {url} after {self.retries + 1} tries: {err}"
            ) from None

    def _post_once(self, url: str, payload: Any, what: str) -> httpx.Response:
        try:
            with httpx.Client(timeout=self.timeout, verify=self.verify) as client:
                response = client.post(url, json=payload, headers=self._headers())
        except httpx.HTTPError as err:
            raise _Transient(f"{type(err).__name__}: {err}") from None
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code >= 400:
            hint = " (check the Authorization value)" if response.status_code in (401, 403) else ""
            raise ElogError(
                f"Elog refused the {what} (POST {url}): HTTP {response.status_code}: "
                f"{response.text[:300]}{hint}"
            )
        return response

    def post_counters(self, counters: Counters) -> None:
        """Replace the job's counters in the Elog (needs ``counters_url``)."""
        if not self.counters_url:
            raise ElogError(
                f"no counters URL: set {COUNTERS_ENV} (ARP sets it in batch jobs) or pass one"
            )
        self._post(self.counters_url, format_counters(counters), "counters")

    def run_params_url(self, experiment: str, run: int) -> str:
        if not self.base_url:
            raise ElogError("no logbook base URL for run parameters: pass base_url (or the host)")
        return self.run_params_template.format(
            base=self.base_url.rstrip("/"), experiment=experiment, run=int(run)
        )

    def post_run_params(self, experiment: str, run: int, params: Mapping[str, Any]) -> None:
        """Add run parameters (name -> text) to one run of an experiment in the logbook."""
        body = {str(k): "" if v is None else str(v) for k, v in params.items()}
        self._post(self.run_params_url(experiment, run), body, "run parameters")
