"""The standalone ``lclstream-api`` server over certified mutual TLS (real TLS 1.3 sockets).

Certificates are made with certified's own API in temporary directories: a server identity,
users alice and bob (their CAs trusted by the server) and mallory (an unknown CA).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_lclstream.api import client as cli
from airflow_provider_lclstream.api.server import create_standalone_app, make_server
from airflow_provider_lclstream.protocol import EndOfStream
from airflow_provider_lclstream.transports import open_sender
from tests.unit.api.fakes import SYNTHETIC, MemoryTransferStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def identity(root: Path, name: str, hosts: list[str] | None = None) -> Any:
    import certified.encode as encode
    from certified import Certified

    san = encode.SAN([f"{name}@example.org"], hosts or [], [])
    return Certified.new(encode.person_name(name), san, root / name)


def trust_server(user: Any, server: Any) -> None:
    from certified.serial import cert_to_pem

    (user.config / "known_servers" / "lclstream.crt").write_text(
        cert_to_pem(server.signer().certificate)
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pki")
    server = identity(root, "lclstream-api", hosts=["127.0.0.1", "localhost"])
    users = {n: identity(root, n) for n in ("alice", "bob", "mallory", "root")}
    for name in ("alice", "bob", "root"):  # mallory's CA is never introduced to the server
        server.add_client(name, users[name].signer().certificate)
    for user in users.values():
        trust_server(user, server)
    return {"server": server, **users}


@pytest.fixture(scope="module")
def api(pki: dict[str, Any]) -> Any:
    store = MemoryTransferStore()
    port = free_port()
    server = make_server(
        create_standalone_app(store, admins=["root"]), "127.0.0.1", port, pki["server"].config
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield type("Api", (), {"url": f"https://127.0.0.1:{port}", "store": store})
    server.should_exit = True
    thread.join(5)


def server_only_context(pki: dict[str, Any]) -> ssl.SSLContext:
    from certified.serial import cert_to_pem

    ctx = ssl.create_default_context(cadata=cert_to_pem(pki["server"].signer().certificate))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def test_no_client_certificate_is_refused(pki: dict[str, Any], api: Any) -> None:
    with (
        pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
        httpx.Client(base_url=api.url, verify=server_only_context(pki)) as http,
    ):
        http.get("/v1/transfers")


def test_certificate_from_unknown_ca_is_refused(pki: dict[str, Any], api: Any) -> None:
    with (
        pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
        pki["mallory"].Client(api.url) as http,
    ):
        http.get("/v1/transfers")


def test_valid_certificate_names_the_user(pki: dict[str, Any], api: Any) -> None:
    with pki["alice"].Client(api.url) as http:
        r = http.post("/v1/transfers", json=SYNTHETIC)
        assert r.status_code == 201, r.text
        assert r.json()["user"] == "alice"
        assert http.get("/v1/transfers").status_code == 200


def test_users_cannot_touch_each_others_transfers(pki: dict[str, Any], api: Any) -> None:
    with pki["bob"].Client(api.url) as bob:
        tid = bob.post("/v1/transfers", json=SYNTHETIC).json()["id"]
        assert bob.get(f"/v1/transfers/{tid}").status_code == 200
    with pki["alice"].Client(api.url) as alice:
        assert alice.get(f"/v1/transfers/{tid}").status_code == 404
        assert alice.delete(f"/v1/transfers/{tid}").status_code == 404
        assert tid not in [t["id"] for t in alice.get("/v1/transfers").json()["data"]]
    assert api.store.records[tid].state == "queued"
    with pki["root"].Client(api.url) as admin:
        users = {t["user"] for t in admin.get("/v1/transfers?all_users=true").json()["data"]}
        assert {"alice", "bob"} <= users
        assert admin.delete(f"/v1/transfers/{tid}").status_code == 200


def test_cli_get_pulls_the_data(
    pki: dict[str, Any], api: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lclstream get`` over mTLS: POST, wait for ready, pull from the buffer's output URL."""
    config = tmp_path / "request.yaml"
    config.write_text("synthetic: true\nevents: 30\nimg_per_file: 10\n")
    before = set(api.store.records)
    data_url = f"tcp://127.0.0.1:{free_port()}"

    def buffer() -> None:  # plays start_buffer + the buffer's output side
        deadline = time.monotonic() + 20
        while not (set(api.store.records) - before) and time.monotonic() < deadline:
            time.sleep(0.05)
        (tid,) = set(api.store.records) - before
        with open_sender(data_url, "zmq", bind=True, send_timeout_s=20) as sender:
            api.store.advance(tid, buffer={"output_url": data_url, "metrics_url": None})
            for i in range(3):
                sender.send(b"payload-%d" % i)
            sender.send(EndOfStream(producer="buffer", messages=3, bytes=27).encode())

    thread = threading.Thread(target=buffer, daemon=True)
    thread.start()
    out = tmp_path / "out"
    rc = cli.main(
        [
            "--server",
            api.url,
            "--certified-config",
            str(pki["alice"].config),
            "get",
            str(config),
            "--out",
            str(out),
            "--poll",
            "0.1",
            "--timeout",
            "20",
        ]
    )
    thread.join(10)
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.read_bytes() for p in out.iterdir()) == [
        b"payload-0",
        b"payload-1",
        b"payload-2",
    ]
    rc = cli.main(["--server", api.url, "--certified-config", str(pki["alice"].config), "list"])
    assert rc == 0 and '"user": "alice"' in capsys.readouterr().out
