"""A small client of a running Airflow 3 (REST API v2) for end-to-end tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

FINISHED = ("success", "failed")


class AirflowApi:
    def __init__(self, url: str, user: str = "admin", password: str = "admin") -> None:
        self.url = url.rstrip("/")
        token = httpx.post(
            f"{self.url}/auth/token", json={"username": user, "password": password}, timeout=30
        )
        token.raise_for_status()
        self.client = httpx.Client(
            base_url=f"{self.url}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=30,
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
