"""The standalone ``lclstream-api`` server over certified mutual TLS (real TLS 1.3 sockets).

Certificates are made with certified's own API in temporary directories: a server identity,
users alice, bob and "Carol Tester" (their CAs trusted by the server, Carol's added under a name
with a space) and mallory (an unknown CA). The caller is the name their CA was added under.
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
from airflow_provider_lclstream.api.server import (
    ClientAuthorities,
    create_standalone_app,
    known_clients_dir,
    make_server,
)
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
    users = {n: identity(root, n) for n in ("alice", "bob", "mallory", "root", "Carol Tester")}
    for name in ("alice", "bob", "root", "Carol Tester"):  # mallory's CA is never introduced
        server.add_client(name, users[name].signer().certificate)
    for user in users.values():
        trust_server(user, server)
    return {"server": server, **users}


@pytest.fixture(scope="module")
def api(pki: dict[str, Any]) -> Any:
    store = MemoryTransferStore()
    port = free_port()
    authorities = ClientAuthorities.load(known_clients_dir(pki["server"].config))
    app = create_standalone_app(store, authorities, admins=["root"])
    server = make_server(app, "127.0.0.1", port, pki["server"].config)
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


def forged_client(pki: dict[str, Any], signer: str, name: str, url: str) -> httpx.Client:
    """A client presenting a certificate for ``name`` signed with ``signer``'s own CA key."""
    import certified.encode as encode
    from certified.serial import cert_to_pem
    from certified.wrappers import ssl_context

    leaf = (
        pki[signer]
        .signer()
        .leaf_cert(encode.person_name(name), encode.SAN([f"{name}@example.org"], [], []))
    )
    ctx = ssl_context(is_client=True)
    leaf.configure_cert(ctx)
    ctx.load_verify_locations(cadata=cert_to_pem(pki["server"].signer().certificate))
    return httpx.Client(base_url=url, verify=ctx)


def test_forged_certificate_cannot_act_as_another_user(pki: dict[str, Any], api: Any) -> None:
    """Alice signs a certificate named bob with her own CA: refused (403), never 200."""
    with pki["bob"].Client(api.url) as bob:
        tid = bob.post("/v1/transfers", json=SYNTHETIC).json()["id"]
    count = len(api.store.records)
    with forged_client(pki, "alice", "bob", api.url) as forged:
        for method, path in [
            ("GET", "/v1/transfers"),
            ("GET", f"/v1/transfers/{tid}"),
            ("DELETE", f"/v1/transfers/{tid}"),
            ("POST", "/v1/transfers"),
        ]:
            r = forged.request(method, path, json=SYNTHETIC if method == "POST" else None)
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert "signed by the CA added as 'alice'" in r.json()["detail"]
    assert api.store.records[tid].state == "queued"
    assert len(api.store.records) == count  # the forged POST created nothing


def test_a_subject_is_not_an_identity(pki: dict[str, Any], api: Any) -> None:
    """A certificate from alice's CA naming someone unknown still acts as alice."""
    with forged_client(pki, "alice", "Somebody Else", api.url) as http:
        r = http.post("/v1/transfers", json=SYNTHETIC)
        assert r.status_code == 201, r.text
        assert r.json()["user"] == "alice"


def test_a_name_with_spaces_works(pki: dict[str, Any], api: Any) -> None:
    """`certified init "Carol Tester"`, added under that name: POST succeeds as that user."""
    with pki["Carol Tester"].Client(api.url) as carol:
        r = carol.post("/v1/transfers", json=SYNTHETIC)
        assert r.status_code == 201, r.text
        assert r.json()["user"] == "Carol Tester"
        listed = carol.get("/v1/transfers").json()["data"]
        assert {t["user"] for t in listed} == {"Carol Tester"}


def test_org_ca_names_its_users(pki: dict[str, Any]) -> None:
    """A CA listed with ``--org-ca`` (the server's own, ``self``, by default) names by subject."""
    import certified.encode as encode
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = (
        pki["server"]
        .signer()
        .leaf_cert(encode.person_name("Dana Org"), encode.SAN(["dana@example.org"], [], []))
    )
    der = leaf.certificate.public_bytes(Encoding.DER)
    known = known_clients_dir(pki["server"].config)
    assert ClientAuthorities.load(known).identity(der) == "Dana Org"
    assert ClientAuthorities.load(known, org_cas=()).identity(der) == "self"


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return rc, err


def test_cli_errors_are_one_line_of_advice(
    pki: dict[str, Any], api: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unreachable server, wrong certified folder, untrusted certificate: exit 3, 5, 4."""
    alice = str(pki["alice"].config)
    rc, err = _cli(
        ["--server", f"https://127.0.0.1:{free_port()}", "--certified-config", alice, "list"],
        capsys,
    )
    assert rc == cli.EXIT_UNREACHABLE and "cannot reach" in err
    rc, err = _cli(["--server", api.url, "--certified-config", str(tmp_path / "nope"), "list"],
                   capsys)  # fmt: skip
    assert rc == cli.EXIT_CONFIG and "--certified-config" in err
    mallory = str(pki["mallory"].config)
    rc, err = _cli(["--server", api.url, "--certified-config", mallory, "list"], capsys)
    assert rc == cli.EXIT_TLS and "certified add-client" in err
    rc, err = _cli(["--server", api.url, "--certified-config", alice, "status", "nope"], capsys)
    assert rc == cli.EXIT_FAILED and "HTTP 404" in err
    rc, err = _cli(
        ["--server", api.url, "--certified-config", alice, "get", str(tmp_path / "missing.yaml")],
        capsys,
    )
    assert rc == cli.EXIT_USAGE and "missing.yaml" in err


def test_cli_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out and "examples:" in out
    assert all(f"  {code}" in out for code in cli.EXIT_CODES)
