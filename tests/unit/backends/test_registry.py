"""The backend registry: one table that the request model, the hook, forms and docs read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_provider_lclstream.backends.base import (
    BaseJobBackend,
    JobState,
    JobStatus,
    backend_class,
    register_backend,
)
from airflow_provider_lclstream.config.backends import BACKENDS, backend_names
from airflow_provider_lclstream.config.connections import BACKEND_SETTINGS
from airflow_provider_lclstream.config.transfer import BackendChoice, TransferRequest
from airflow_provider_lclstream.hooks.job_backend import (
    JobBackendHook,
    settings_class,
    settings_from_connection,
)


class DummyBackend(BaseJobBackend):
    """A backend from outside the package, registered at run time."""

    name = "dummy"

    def __init__(self, greeting: str = "hello", answer: int = 0) -> None:
        self.greeting = greeting
        self.answer = answer

    def state(self, job_id: str) -> JobStatus:
        return JobStatus(job_id, JobState.COMPLETED, self.greeting)


@pytest.fixture
def dummy() -> Iterator[None]:
    before = dict(BACKENDS)
    register_backend("dummy", DummyBackend, description="a test backend", pins_node=True)
    yield
    BACKENDS.clear()
    BACKENDS.update(before)


def test_builtin_rows_match_their_settings_models() -> None:
    assert backend_names() == ["local", "slurm", "slurm_cli", "psik", "sfapi", "s3m"]
    for name, info in BACKENDS.items():
        settings = settings_class(info.conn_type)
        assert (settings.backend, settings.conn_type) == (name, info.conn_type)
        assert BACKEND_SETTINGS[info.conn_type] is settings
        assert backend_class(name).name == name  # imports, and the class agrees on its name


def test_unregistered_name_is_refused_by_the_request_model() -> None:
    with pytest.raises(ValueError, match="unknown job backend 'dummy'; known backends: local"):
        BackendChoice(backend="dummy")


def test_registered_backend_is_valid_everywhere(
    dummy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the request model (and its JSON schema, which the API and the docs show)
    request = TransferRequest(synthetic=True, streamer={"backend": "dummy", "conn_id": "mine"})
    assert request.streamer.backend == "dummy"
    assert "dummy" in BackendChoice.model_json_schema()["properties"]["backend"]["enum"]
    assert "dummy" in backend_names()  # what the example DAGs' forms list
    # the hook: a connection of type lclstream_dummy gives the class, its extra as kwargs
    conn = Connection(
        conn_id="mine",
        conn_type="lclstream_dummy",
        extra=json.dumps({"greeting": "hi", "answer": 3}),
    )
    settings = settings_from_connection(conn)
    assert settings.backend == "dummy"

    def get_connection(cls: Any, conn_id: str) -> Connection:
        assert conn_id == "mine"
        return conn

    monkeypatch.setattr(JobBackendHook, "get_connection", classmethod(get_connection))
    backend = JobBackendHook("mine").get_conn()
    assert isinstance(backend, DummyBackend)
    assert (backend.greeting, backend.answer) == ("hi", 3)
    assert backend.state("1").native_state == "hi"


def test_unknown_connection_type_lists_the_known_ones() -> None:
    conn = Connection(conn_id="x", conn_type="http")
    with pytest.raises(ValueError, match="lclstream_local.*lclstream_slurm"):
        settings_from_connection(conn)
