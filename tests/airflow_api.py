"""A small client of a running Airflow 3 (REST API v2) for end-to-end tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

FINISHED = ("success", "failed")
TIMEOUT_S = 90
"""Longer than the test deployment's SQLite lock wait (60 s, airflow-standalone.sh): a write
may wait that long for the scheduler's transaction and still be served."""
API_LOG = (
    Path(
        os.environ.get("LCLSTREAM_SERVICES_DIR", Path(__file__).resolve().parents[1] / ".services")
    )
    / "airflow-standalone/logs/api-server.log"
)


def _api_log_tail(lines: int = 30) -> str:
    try:
        return "\n".join(API_LOG.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(no api-server log: {err})"


SERVER_ERROR_RETRIES = 2
"""How often the test client asks again after a 5xx answer to an idempotent request."""
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})


class _Client(httpx.Client):
    """An httpx client whose timeouts name the request and show the api-server's last lines
    (a clean-clone CI run once saw two requests time out and nothing else)."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        for attempt in range(1 + SERVER_ERROR_RETRIES):
            started = time.monotonic()
            try:
                response = super().send(request, **kwargs)
            except httpx.TimeoutException as err:
                raise AssertionError(
                    f"{request.method} {request.url} got no answer in "
                    f"{time.monotonic() - started:.0f} s ({err!r}); api-server log:\n"
                    f"{_api_log_tail()}"
                ) from err
            retry = (
                response.status_code >= 500
                and request.method in IDEMPOTENT
                and attempt < SERVER_ERROR_RETRIES
            )
            if not retry:
                return response
            # SQLite's one writer: a CI run saw every Airflow process wait 60 s for its lock,
            # and an unpause fail with 500 at the end of that wait. Say so, and ask again.
            print(f"{request.method} {request.url}: {response.status_code} after "
                  f"{time.monotonic() - started:.1f} s; asking again. api-server log:\n"
                  f"{_api_log_tail()}")  # fmt: skip
            response.close()
            time.sleep(1)
        raise AssertionError("unreachable")


class AirflowApi:
    def __init__(self, url: str, user: str = "admin", password: str = "admin") -> None:
        self.url = url.rstrip("/")
        with _Client(timeout=TIMEOUT_S) as client:
            token = client.post(
                f"{self.url}/auth/token", json={"username": user, "password": password}
            )
        token.raise_for_status()
        self.client = _Client(
            base_url=f"{self.url}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=TIMEOUT_S,
        )

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.get(f"/dags/{dag_id}").status_code == 200:
                return
            time.sleep(1)
        raise AssertionError(f"DAG {dag_id} was not parsed within {timeout} s")

    def unpause(self, dag_id: str) -> None:
        self.wait_for_dag(dag_id)
        self.client.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        response = self.client.post(
            f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}
        )
        response.raise_for_status()
        return str(response.json()["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns", order_by="-start_date")["dag_runs"])

    def wait_for_new_run(self, dag_id: str, known: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs(dag_id):
                if run["dag_run_id"] not in known:
                    return str(run["dag_run_id"])
            time.sleep(0.5)
        raise AssertionError(f"no new run of {dag_id} within {timeout} s")

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in FINISHED:
                return state
            time.sleep(1)
        raise AssertionError(
            f"{dag_id} {run_id} still {state} after {timeout} s: {self.tasks(dag_id, run_id)}"
        )

    def tasks(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        data = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in data["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.get(path, deserialize=True)["value"]

    def mark_failed(self, dag_id: str, run_id: str) -> None:
        response = self.client.patch(f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})
        response.raise_for_status()
