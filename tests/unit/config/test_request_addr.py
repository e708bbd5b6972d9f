"""``addr``: the slides' request body, as written; the buffer's output dials the user's receiver."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.transfer.jobs import BufferEndpoints, buffer_job

#: The slides' request body: exactly these seven keys.
SLIDES = {
    "exp": "xpptut15",
    "run": 670,
    "access_mode": "smd",
    "detector_name": "epix10k2M",
    "mode": "calib",
    "addr": "tcp://psana-receiver.slac.stanford.edu:5555",
    "img_per_file": 1,
}


def test_the_slides_body_is_accepted_and_the_buffer_dials_addr() -> None:
    request = TransferRequest.model_validate(SLIDES)
    assert request.addr == SLIDES["addr"]
    endpoints = BufferEndpoints("127.0.0.1", 5000, 5001, 5002)
    script = buffer_job(request, endpoints).script
    assert f"--output {SLIDES['addr']} --dial-output" in script
    assert "0.0.0.0:5001" not in script  # the output listens nowhere
    assert "--input tcp://0.0.0.0:5000" in script
    plain = buffer_job(TransferRequest.model_validate({**SLIDES, "addr": None}), endpoints).script
    assert "--output tcp://0.0.0.0:5001" in plain and "--dial-output" not in plain


@pytest.mark.parametrize(
    "addr",
    ["http://host:5555", "tcp://host", "tcp://host:0", "tcp://host:70000", "tcp://$(id):1",
     "tcp://host:5555/x", "tcp://*:5555"],
)  # fmt: skip
def test_a_bad_addr_is_refused(addr: str) -> None:
    with pytest.raises(ValidationError) as err:
        TransferRequest.model_validate({**SLIDES, "addr": addr})
    assert "is not a receiver address: give tcp://host:port" in str(err.value)


@pytest.mark.parametrize(
    ("extra", "named"),
    [({"consumer_command": "cat"}, "consumer_command"),
     ({"consumer_template": "receive"}, "consumer_template"),
     ({"consumers": 2}, "consumers")],
)  # fmt: skip
def test_addr_runs_no_consumer_so_consumer_fields_are_refused(extra: dict, named: str) -> None:
    with pytest.raises(ValidationError) as err:
        TransferRequest.model_validate({**SLIDES, **extra})
    assert f"no consumer job runs, so {named} cannot be given" in str(err.value)


def test_the_api_accepts_the_slides_body() -> None:
    from fastapi import Header
    from fastapi.testclient import TestClient

    from airflow_provider_lclstream.api.app import Principal, build_app
    from tests.unit.api.fakes import MemoryTransferStore

    def principal(x_user: str = Header(...)) -> Principal:
        return Principal(x_user)

    client = TestClient(build_app(MemoryTransferStore(), principal))
    response = client.post("/v1/transfers", json=SLIDES, headers={"X-User": "alice"})
    assert response.status_code == 201, response.text
