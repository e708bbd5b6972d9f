"""The API over an in-memory store: endpoints, ownership, 422/413, no secrets echoed or logged."""

from __future__ import annotations

import logging

import pytest
import yaml
from fastapi import Header
from fastapi.testclient import TestClient

from airflow_provider_lclstream.api.app import Principal, build_app

from .fakes import SYNTHETIC, FakeBuffer, MemoryTransferStore

SECRET = "S3CRET-do-not-echo-7f3a"


def header_principal(x_user: str = Header(...), x_admin: str = Header("")) -> Principal:
    return Principal(name=x_user, admin=x_admin == "yes")


@pytest.fixture
def store() -> MemoryTransferStore:
    return MemoryTransferStore()


@pytest.fixture
def client(store: MemoryTransferStore) -> TestClient:
    return TestClient(build_app(store, header_principal, airflow_base_url="http://af:8080/"))


def as_user(name: str, admin: bool = False) -> dict[str, str]:
    return {"x-user": name, **({"x-admin": "yes"} if admin else {})}


def test_create_list_get_cancel(client: TestClient, store: MemoryTransferStore) -> None:
    r = client.post("/v1/transfers", json=SYNTHETIC, headers=as_user("alice"))
    assert r.status_code == 201, r.text
    status = r.json()
    assert status["state"] == "queued" and status["user"] == "alice"
    assert status["requested_by"] == "alice" and status["created_at"] == status["created"]
    tid = status["id"]
    assert store.confs[tid] == {"request": {"synthetic": True, "events": 100}, "user": "alice"}

    with FakeBuffer() as buffer:
        store.advance(
            tid,
            buffer={"input_url": "tcp://h:1", "output_url": "tcp://h:2", "metrics_url": buffer.url},
            start_consumers="success",
            run_streamer="running",
        )
        detail = client.get(f"/v1/transfers/{tid}", headers=as_user("alice")).json()
    assert detail["state"] == "ready" and detail["url"] == "tcp://h:2"
    assert detail["transport"] == "zmq"
    assert detail["tasks"]["run_streamer"] == "running"
    assert detail["metrics"]["messages_in"] >= 1 and detail["metrics"]["mb_per_s"] == 40.0
    assert detail["metrics"]["events_per_s"] == 200.0
    assert detail["airflow_url"] == f"http://af:8080/dags/lclstream_transfer/runs/{tid}"

    listed = client.get("/v1/transfers?state=ready", headers=as_user("alice")).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == tid
    assert client.get("/v1/transfers?state=failed", headers=as_user("alice")).json()["count"] == 0

    r = client.delete(f"/v1/transfers/{tid}", headers=as_user("alice"))
    assert r.status_code == 200 and "canceled" in r.json()["message"]
    assert client.get(f"/v1/transfers/{tid}", headers=as_user("alice")).json()["state"] == (
        "canceled"
    )
    assert client.delete(f"/v1/transfers/{tid}", headers=as_user("alice")).status_code == 409


def test_unreachable_buffer_is_reported_not_raised(
    client: TestClient, store: MemoryTransferStore
) -> None:
    tid = client.post("/v1/transfers", json=SYNTHETIC, headers=as_user("a")).json()["id"]
    store.advance(tid, buffer={"output_url": "tcp://h:2", "metrics_url": "http://127.0.0.1:9"})
    detail = client.get(f"/v1/transfers/{tid}", headers=as_user("a")).json()
    assert detail["metrics"]["error"].startswith("buffer stats unavailable")


def test_users_see_only_their_own(client: TestClient) -> None:
    tid = client.post("/v1/transfers", json=SYNTHETIC, headers=as_user("bob")).json()["id"]
    client.post("/v1/transfers", json=SYNTHETIC, headers=as_user("alice"))
    assert client.get(f"/v1/transfers/{tid}", headers=as_user("alice")).status_code == 404
    assert client.delete(f"/v1/transfers/{tid}", headers=as_user("alice")).status_code == 404
    assert client.get(f"/v1/transfers/{tid}", headers=as_user("bob")).json()["state"] == "queued"
    mine = client.get("/v1/transfers", headers=as_user("alice")).json()
    assert [t["user"] for t in mine["data"]] == ["alice"]
    everyone = client.get("/v1/transfers?all_users=true", headers=as_user("root", admin=True))
    assert sorted(t["user"] for t in everyone.json()["data"]) == ["alice", "bob"]
    # all_users is ignored for non-admins
    assert client.get("/v1/transfers?all_users=true", headers=as_user("alice")).json()["count"] == 1
    assert client.delete(f"/v1/transfers/{tid}", headers=as_user("root", admin=True)).is_success


def test_unknown_and_malformed_ids(client: TestClient) -> None:
    assert client.get("/v1/transfers/nope", headers=as_user("a")).status_code == 404
    r = client.get("/v1/transfers/a;b", headers=as_user("a"))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "path.transfer_id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"exp": "xpp;reboot", "run": 1}, "exp"),
        ({**SYNTHETIC, "files": ["/data/a.xtc2 && curl evil"], "synthetic": False}, "files"),
        ({**SYNTHETIC, "consumer": {"conn_id": "x`id`"}}, "consumer.conn_id"),
    ],
)
def test_shell_metacharacters_are_422_naming_the_field(
    client: TestClient, body: dict, field: str
) -> None:
    r = client.post("/v1/transfers", json=body, headers=as_user("alice"))
    assert r.status_code == 422
    assert field in [d["field"] for d in r.json()["detail"]], r.json()


def test_bad_user_name_is_422(client: TestClient) -> None:
    r = client.post("/v1/transfers", json=SYNTHETIC, headers=as_user("eve;rm"))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "user"


def test_yaml_and_invalid_bodies(client: TestClient) -> None:
    r = client.post(
        "/v1/transfers",
        content=yaml.safe_dump(SYNTHETIC),
        headers={**as_user("a"), "content-type": "application/yaml"},
    )
    assert r.status_code == 201
    r = client.post(
        "/v1/transfers", content=b"{not json", headers={**as_user("a"), "content-type": "x/y"}
    )
    assert r.status_code == 422
    assert client.post("/v1/transfers", json=[1], headers=as_user("a")).status_code == 422


def test_oversize_body_is_413(client: TestClient) -> None:
    big = {**SYNTHETIC, "padding": "x" * (1 << 20)}
    assert client.post("/v1/transfers", json=big, headers=as_user("a")).status_code == 413

    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    r = client.post("/v1/transfers", content=chunks(), headers=as_user("a"))
    assert r.status_code == 413


def test_secrets_are_never_echoed_or_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {**SYNTHETIC, "streamer": {"backend": "psik", "attributes": {"account": SECRET}}}
    r = client.post("/v1/transfers", json=body, headers=as_user("alice"))
    assert r.status_code == 201
    tid = r.json()["id"]
    texts = [
        r.text,
        client.get(f"/v1/transfers/{tid}", headers=as_user("alice")).text,
        client.get("/v1/transfers", headers=as_user("alice")).text,
    ]
    bad = {**body, "exp": "bad name", "run": 1, "extra_field": SECRET}
    r = client.post("/v1/transfers", json=bad, headers=as_user("alice"))
    assert r.status_code == 422
    texts.append(r.text)
    r = client.get("/v1/transfers?limit=" + SECRET, headers=as_user("alice"))
    assert r.status_code == 422
    texts.append(r.text)
    assert all(SECRET not in t for t in texts)
    # The test client logs each request with its query (logger "httpx", or "httpx2" in newer
    # Starlette test clients): that is the client side, not the server.
    server_logs = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    assert server_logs and all(SECRET not in m for m in server_logs)


def test_ui_page_is_served(client: TestClient) -> None:
    r = client.get("/ui")
    assert r.status_code == 200 and "LCLStream transfers" in r.text
    assert r.headers["cache-control"] == "no-store"


def test_a_transfer_with_two_buffers_shows_each_and_their_sum(
    client: TestClient, store: MemoryTransferStore
) -> None:
    """``start_buffer``'s result lists the buffers: the detail shows each one's live numbers
    and sums them in ``metrics``; an unreachable one is named in the sum's error."""
    tid = client.post("/v1/transfers", json=SYNTHETIC, headers=as_user("a")).json()["id"]
    with FakeBuffer(msg_rate=20.0) as first, FakeBuffer(msg_rate=10.0) as second:
        buffers = [
            {"index": 0, "output_url": "tcp://h:2", "metrics_url": first.url},
            {"index": 1, "output_url": "tcp://g:5", "metrics_url": second.url},
        ]
        store.advance(tid, buffer={"output_url": "tcp://h:2", "buffers": buffers})
        detail = client.get(f"/v1/transfers/{tid}", headers=as_user("a")).json()
    each = detail["buffers"]
    assert [b["index"] for b in each] == [0, 1] and each[1]["url"] == "tcp://g:5"
    assert [b["metrics"]["mb_per_s"] for b in each] == [40.0, 20.0]
    assert detail["metrics"]["mb_per_s"] == 60.0 and detail["metrics"]["producers_expected"] == 4
    assert detail["metrics"]["error"] is None
    buffers[1]["metrics_url"] = "http://127.0.0.1:9"
    with FakeBuffer() as first:
        buffers[0]["metrics_url"] = first.url
        store.advance(tid, buffer={"output_url": "tcp://h:2", "buffers": buffers})
        detail = client.get(f"/v1/transfers/{tid}", headers=as_user("a")).json()
    assert detail["metrics"]["error"].startswith("buffer 1: buffer stats unavailable")
    assert detail["metrics"]["mb_per_s"] == 40.0


def test_warm_pools_are_listed_for_any_signed_in_user(store: MemoryTransferStore) -> None:
    from airflow_provider_lclstream.hooks.warm_pool import load_book, pool_summary

    book = load_book(
        '{"pools": {"mfx": {"spec": {"name": "mfx", "conn_id": "lclstream_slurm", "ranks": 4,'
        ' "instrument": "mfx"}, "jobs": [{"job_id": "17", "submitted": 1.0,'
        ' "address": "tcp://n1:4000"}], "counters": {"claimed": 3, "fallbacks": 1}}}}'
    )
    pools = [pool_summary(state) for state in book.pools.values()]
    client = TestClient(build_app(store, header_principal, warm_pools=lambda: pools))
    r = client.get("/v1/warm-pools", headers=as_user("bob"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 1
    pool = body["data"][0]
    assert pool["name"] == "mfx" and pool["ready"] == 1 and pool["spec"]["ranks"] == 4
    assert pool["counters"]["claimed"] == 3 and pool["counters"]["fallbacks"] == 1
    assert client.get("/v1/warm-pools").status_code == 422  # not signed in (no x-user)
    assert 'id="warm-pools"' in client.get("/ui").text
