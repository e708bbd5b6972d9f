"""``/v1/subscriptions`` over an in-memory store: CRUD, ownership, 403/422, warnings, audit,
unmatched run starts, the transfers' subscription tag, and the ``lclstream subscriptions`` CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from airflow_provider_lclstream.api import client as cli
from airflow_provider_lclstream.api.app import build_app
from airflow_provider_lclstream.api.subscriptions import MemorySubscriptionStore
from airflow_provider_lclstream.config.consumers import ConsumerTemplates

from .fakes import MemoryTransferStore
from .test_app import as_user, header_principal

TEMPLATES = ConsumerTemplates.parse(
    '{"crystfel": {"command": ["indexamajig", "-i", "$LCLSTREAM_URL", "-g", "{geometry}"],'
    ' "params": {"geometry": {"type": "path", "required": true}}}}',
    "test",
)
MANAGERS = {"alice": "mfxl10[0-9]+", "bob": "xpptut15"}
SPEC = {
    "match": {"experiment": "mfxl1023", "run_types": ["DATA"]},
    "template": {
        "detector_name": "jungfrau4M",
        "consumer_template": "crystfel",
        "consumer_params": {"geometry": "/g/j4m.geom"},
    },
    "description": "index every DATA run",
}


@pytest.fixture
def subs() -> MemorySubscriptionStore:
    return MemorySubscriptionStore()


@pytest.fixture
def client(subs: MemorySubscriptionStore) -> TestClient:
    app = build_app(
        MemoryTransferStore(),
        header_principal,
        consumer_templates=lambda: TEMPLATES,
        subscriptions=subs,
        experiment_managers=lambda: MANAGERS,
    )
    return TestClient(app)


def test_create_list_show_update_disable_delete_with_audit(client: TestClient) -> None:
    alice = as_user("alice")
    r = client.post("/v1/subscriptions", json=SPEC, headers=alice)
    assert r.status_code == 201, r.text
    saved = r.json()
    assert saved["warnings"] == []
    sid = saved["subscription"]["id"]
    assert sid == "sub1" and saved["subscription"]["owner"] == "alice"
    assert saved["subscription"]["enabled"] is True

    listed = client.get("/v1/subscriptions", headers=alice).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == sid
    assert client.get(f"/v1/subscriptions/{sid}", headers=alice).json()["match"]["experiment"] == (
        "mfxl1023"
    )

    r = client.patch(
        f"/v1/subscriptions/{sid}", json={"template": {"detector_name": "epix10k2M"}}, headers=alice
    )
    assert r.status_code == 200, r.text
    assert r.json()["subscription"]["template"] == {"detector_name": "epix10k2M"}
    r = client.patch(f"/v1/subscriptions/{sid}", json={"enabled": False}, headers=alice)
    assert r.status_code == 200 and r.json()["subscription"]["enabled"] is False
    r = client.patch(f"/v1/subscriptions/{sid}", json={"enabled": True}, headers=alice)
    assert r.json()["subscription"]["enabled"] is True
    r = client.delete(f"/v1/subscriptions/{sid}", headers=alice)
    assert r.status_code == 200 and "deleted" in r.json()["message"]
    assert client.get(f"/v1/subscriptions/{sid}", headers=alice).status_code == 404

    audit = client.get(f"/v1/subscriptions/{sid}/audit", headers=alice).json()
    actions = [e["action"] for e in audit["data"]]
    assert actions == ["delete", "enable", "disable", "update", "create"]  # newest first
    assert all(e["who"] == "alice" and e["at"] for e in audit["data"])
    update = audit["data"][3]["diff"]
    assert update["template.detector_name"] == ["jungfrau4M", "epix10k2M"]
    assert update["template.consumer_template"] == ["crystfel", None]
    assert audit["data"][2]["diff"] == {"enabled": [True, False]}
    assert audit["data"][4]["diff"]["match.experiment"] == [None, "mfxl1023"]
    assert audit["data"][0]["diff"]["owner"] == ["alice", None]
    assert [e["seq"] for e in audit["data"]] == [5, 4, 3, 2, 1]
    everything = client.get("/v1/subscriptions/audit", headers=alice).json()
    assert everything["count"] == 5


def test_owners_see_their_own_admins_see_all(client: TestClient) -> None:
    sid = client.post("/v1/subscriptions", json=SPEC, headers=as_user("alice")).json()[
        "subscription"
    ]["id"]
    bob = as_user("bob")
    assert client.get("/v1/subscriptions", headers=bob).json()["count"] == 0
    assert client.get(f"/v1/subscriptions/{sid}", headers=bob).status_code == 404
    assert (
        client.patch(f"/v1/subscriptions/{sid}", json={"enabled": False}, headers=bob).status_code
        == 404
    )
    assert client.delete(f"/v1/subscriptions/{sid}", headers=bob).status_code == 404
    assert client.get(f"/v1/subscriptions/{sid}/audit", headers=bob).status_code == 404
    assert client.get("/v1/subscriptions/audit", headers=bob).json()["count"] == 0
    # all_users is for admins; for others it lists their own
    assert client.get("/v1/subscriptions?all_users=true", headers=bob).json()["count"] == 0
    root = as_user("root", admin=True)
    assert client.get("/v1/subscriptions?all_users=true", headers=root).json()["count"] == 1
    r = client.patch(f"/v1/subscriptions/{sid}", json={"enabled": False}, headers=root)
    assert r.status_code == 200
    entry = client.get(f"/v1/subscriptions/{sid}/audit", headers=as_user("alice")).json()["data"][0]
    assert (entry["who"], entry["action"]) == ("root", "disable")


def test_experiments_the_caller_may_not_manage_are_forbidden(client: TestClient) -> None:
    other = {**SPEC, "match": {"experiment": "xpptut15"}}
    r = client.post("/v1/subscriptions", json=other, headers=as_user("alice"))
    assert r.status_code == 403 and "may not manage experiment xpptut15" in r.json()["detail"]
    wide = {**SPEC, "match": {"instrument": "mfx"}}
    r = client.post("/v1/subscriptions", json=wide, headers=as_user("alice"))
    assert r.status_code == 403 and "for admins" in r.json()["detail"]
    r = client.post("/v1/subscriptions", json=SPEC, headers=as_user("carol"))
    assert r.status_code == 403
    r = client.post("/v1/subscriptions", json={**SPEC, "owner": "bob"}, headers=as_user("alice"))
    assert r.status_code == 403 and "another owner" in r.json()["detail"]
    r = client.post(
        "/v1/subscriptions", json={**wide, "owner": "bob"}, headers=as_user("root", True)
    )
    assert r.status_code == 201 and r.json()["subscription"]["owner"] == "bob"
    # alice may not move her subscription to an experiment she does not manage
    sid = client.post("/v1/subscriptions", json=SPEC, headers=as_user("alice")).json()[
        "subscription"
    ]["id"]
    r = client.patch(
        f"/v1/subscriptions/{sid}",
        json={"match": {"experiment": "xpptut15"}},
        headers=as_user("alice"),
    )
    assert r.status_code == 403


def test_an_invalid_template_is_refused_at_save_naming_the_field(client: TestClient) -> None:
    alice = as_user("alice")
    bad = {**SPEC, "template": {"detector_name": "jungfrau4M", "mode": "cooked", "ranks": 0}}
    r = client.post("/v1/subscriptions", json=bad, headers=alice)
    assert r.status_code == 422
    fields = {d["field"] for d in r.json()["detail"]}
    assert fields == {"template.mode", "template.ranks"}
    r = client.post(
        "/v1/subscriptions",
        json={**SPEC, "template": {"consumer_template": "crystfel"}},
        headers=alice,
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "template.consumer_template"
    assert "geometry" in r.json()["detail"][0]["msg"]
    r = client.post(
        "/v1/subscriptions", json={**SPEC, "match": {"experiment": "Bad Name"}}, headers=alice
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "match.experiment"
    r = client.post("/v1/subscriptions", json={**SPEC, "colour": 1}, headers=alice)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "colour"
    r = client.post("/v1/subscriptions", content=b"[1, 2]", headers=alice)
    assert r.status_code == 422
    sid = client.post("/v1/subscriptions", json=SPEC, headers=alice).json()["subscription"]["id"]
    r = client.patch(f"/v1/subscriptions/{sid}", json={"template": {"mode": "x"}}, headers=alice)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "template.mode"
    assert client.get("/v1/subscriptions/audit", headers=alice).json()["count"] == 1  # only create


def test_yaml_body_and_overlap_warning(client: TestClient) -> None:
    import yaml

    alice = {**as_user("alice"), "Content-Type": "application/yaml"}
    first = client.post("/v1/subscriptions", content=yaml.safe_dump(SPEC), headers=alice)
    assert first.status_code == 201 and first.json()["warnings"] == []
    second = client.post("/v1/subscriptions", content=yaml.safe_dump(SPEC), headers=alice)
    assert second.status_code == 201
    [warning] = second.json()["warnings"]
    assert warning.startswith("overlaps sub1") and "two transfers" in warning
    other = {**SPEC, "template": {**SPEC["template"], "detector_name": "epix10k2M"}}
    third = client.post("/v1/subscriptions", content=yaml.safe_dump(other), headers=alice)
    assert third.json()["warnings"] == []


def test_unmatched_run_starts_are_listed(client: TestClient, subs: MemorySubscriptionStore) -> None:
    subs.unmatched_events = [
        {"experiment": "cxil0001", "run": r, "kind": "run_start"} for r in range(1, 4)
    ]
    r = client.get("/v1/subscriptions/unmatched?limit=2", headers=as_user("bob"))
    assert r.status_code == 200
    assert r.json()["count"] == 3 and [e["run"] for e in r.json()["data"]] == [3, 2]


def test_transfer_status_carries_its_subscription() -> None:
    from datetime import UTC, datetime

    from airflow_provider_lclstream.api.store import TransferRecord

    store = MemoryTransferStore()
    store.records["sub1__x"] = TransferRecord(
        id="sub1__x",
        user="alice",
        created=datetime.now(UTC),
        dag_run_state="queued",
        subscription="sub1",
    )
    client = TestClient(build_app(store, header_principal))
    [listed] = client.get("/v1/transfers", headers=as_user("alice")).json()["data"]
    assert listed["subscription"] == "sub1"


# ------------------------------------------------------------------ CLI


def _cli(
    client: TestClient, argv: list[str], capsys: pytest.CaptureFixture[str], user: str = "alice"
) -> tuple[int, Any, str]:
    class Http:
        def __init__(self, _: str) -> None:
            pass

        def __enter__(self) -> Any:
            client.headers.update(as_user(user))
            return client

        def __exit__(self, *exc: object) -> None:
            pass

    status = cli.main(["--server", "https://api", *argv], make_client=Http)
    out, err = capsys.readouterr()
    return status, (json.loads(out) if out.strip() else None), err


def test_cli_verbs(client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    spec = tmp_path / "sub.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    status, out, _ = _cli(client, ["subscriptions", "create", str(spec)], capsys)
    assert status == 0 and out["subscription"]["id"] == "sub1"
    status, out, err = _cli(client, ["subscriptions", "create", str(spec)], capsys)
    assert status == 0 and "lclstream: warning: overlaps sub1" in err
    status, out, _ = _cli(client, ["subscriptions", "list"], capsys)
    assert [s["id"] for s in out["data"]] == ["sub1", "sub2"]
    assert (
        _cli(client, ["subscriptions", "disable", "sub2"], capsys)[1]["subscription"]["enabled"]
        is False
    )
    assert _cli(client, ["subscriptions", "enable", "sub2"], capsys)[0] == 0
    patch = tmp_path / "patch.yaml"
    patch.write_text("description: nightly\n")
    status, out, _ = _cli(client, ["subscriptions", "update", "sub2", str(patch)], capsys)
    assert out["subscription"]["description"] == "nightly"
    status, out, _ = _cli(client, ["subscriptions", "show", "sub2"], capsys)
    assert out["id"] == "sub2"
    assert _cli(client, ["subscriptions", "delete", "sub2"], capsys)[0] == 0
    status, out, _ = _cli(client, ["subscriptions", "audit", "sub2"], capsys)
    assert [e["action"] for e in out["data"]] == ["delete", "update", "enable", "disable", "create"]
    status, out, _ = _cli(client, ["subscriptions", "unmatched"], capsys)
    assert status == 0 and out["count"] == 0


def test_cli_errors_are_one_line(
    client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("template: {mode: cooked}\nmatch: {experiment: mfxl1023}\n")
    status, _, err = _cli(client, ["subscriptions", "create", str(bad)], capsys)
    assert status == cli.EXIT_FAILED and "HTTP 422" in err and "template.mode" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n")
    status, _, err = _cli(client, ["subscriptions", "create", str(listing)], capsys)
    assert status == cli.EXIT_USAGE and "must hold a mapping" in err
    status, _, err = _cli(client, ["subscriptions", "create", str(tmp_path / "nope.yaml")], capsys)
    assert status == cli.EXIT_USAGE and "cannot read" in err
    status, _, err = _cli(client, ["subscriptions", "show", "sub99"], capsys)
    assert status == cli.EXIT_FAILED and "HTTP 404" in err


def test_cli_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--server", "x", "subscriptions", "--help"])
    out = capsys.readouterr().out
    for verb in ("list", "create", "show", "update", "enable", "disable", "delete", "audit"):
        assert f"subscriptions {verb}" in out
    assert "consumer_template" in out
