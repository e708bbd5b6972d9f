"""ElogClient / ElogHook against a FAKE Elog (tests/fake_elog.py).

The fake is a stdlib HTTP server on 127.0.0.1 implementing only the documented ARP counters
endpoint (``JID_UPDATE_COUNTERS``: POST a JSON list of ``{"key", "value"}``) and the logbook's
``add_run_params`` service; it is not the real Elog.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from airflow_provider_lclstream.arp.elog import ElogClient, ElogError, format_counters
from tests.fake_elog import FakeElog

SECRET = "Bearer arp-secret-token"


@pytest.fixture
def elog() -> Iterator[FakeElog]:
    fake = FakeElog().start()
    yield fake
    fake.stop()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/jid/ws/replace_counters/1"


def test_format_counters_accepts_mappings_and_pairs() -> None:
    assert format_counters({"Events": 12, "State": None}) == [
        {"key": "Events", "value": "12"},
        {"key": "State", "value": ""},
    ]
    assert format_counters([("<b>Rate</b>", 1.5)]) == [{"key": "<b>Rate</b>", "value": "1.5"}]
    with pytest.raises(ValueError, match="non-empty strings"):
        format_counters({"": 1})


def test_counters_posted_with_authorization(elog: FakeElog) -> None:
    elog.require_authorization = SECRET
    client = ElogClient(counters_url=elog.counters_url("42"), authorization=SECRET)
    client.post_counters({"Events": 10, "State": "running"})
    client.post_counters({"Events": 20, "State": "done"})
    assert elog.counters() == [
        [{"key": "Events", "value": "10"}, {"key": "State", "value": "running"}],
        [{"key": "Events", "value": "20"}, {"key": "State", "value": "done"}],
    ]
    assert {p.authorization for p in elog.posts} == {SECRET}
    assert SECRET not in repr(client)


def test_from_env_reads_the_arp_variables(elog: FakeElog) -> None:
    env = {"JID_UPDATE_COUNTERS": elog.counters_url(), "Authorization": SECRET}
    client = ElogClient.from_env(env, timeout=3.0)
    assert client.counters_url == env["JID_UPDATE_COUNTERS"]
    assert client.timeout == 3.0
    client.post_counters([("a", 1)])
    assert elog.posts[0].authorization == SECRET


def test_server_errors_are_retried(elog: FakeElog) -> None:
    elog.fail_next = [503, 500]
    ElogClient(counters_url=elog.counters_url(), retries=2, backoff=0.01).post_counters({"x": 1})
    assert elog.latest_counters() == {"x": "1"}


def test_refusal_is_an_error_without_the_secret(elog: FakeElog) -> None:
    elog.require_authorization = "Bearer the-right-one"
    client = ElogClient(counters_url=elog.counters_url(), authorization=SECRET)
    with pytest.raises(ElogError, match="HTTP 403.*check the Authorization") as info:
        client.post_counters({"x": 1})
    assert SECRET not in str(info.value)
    assert elog.posts == []


def test_unreachable_elog_fails_after_retries() -> None:
    client = ElogClient(counters_url=closed_port_url(), retries=1, timeout=2, backoff=0.01)
    with pytest.raises(ElogError, match="after 2 tries"):
        client.post_counters({"x": 1})


def test_missing_counters_url_says_what_to_set() -> None:
    with pytest.raises(ElogError, match="JID_UPDATE_COUNTERS"):
        ElogClient.from_env({}).post_counters({"x": 1})


def test_run_params(elog: FakeElog) -> None:
    client = ElogClient(base_url=elog.url + "/", authorization=SECRET)
    client.post_run_params("xpptut15", 7, {"lclstream_run": "arp__x", "events": 100})
    (post,) = elog.posts
    assert post.path == "/lgbk/xpptut15/ws/add_run_params"
    assert post.query == {"run_num": ["7"]}
    assert post.body == {"lclstream_run": "arp__x", "events": "100"}
    with pytest.raises(ElogError, match="no logbook base URL"):
        ElogClient().post_run_params("xpptut15", 7, {})


def test_hook_without_connection_uses_the_arp_environment(
    elog: FakeElog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_lclstream.hooks.elog import ElogHook

    monkeypatch.setenv("JID_UPDATE_COUNTERS", elog.counters_url("7"))
    monkeypatch.setenv("Authorization", SECRET)
    hook = ElogHook()
    hook.post_counters({"State": "running"})
    assert elog.latest_counters() == {"State": "running"}
    assert elog.posts[0].path == "/jid/ws/replace_counters/7"
    assert elog.posts[0].authorization == SECRET
    # explicit arguments win over the environment
    ElogHook(counters_url=elog.counters_url("8")).post_counters({"a": 1})
    assert elog.posts[-1].path == "/jid/ws/replace_counters/8"


def test_hook_with_connection(elog: FakeElog, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_lclstream.hooks.elog import ElogHook

    conn = {
        "conn_type": "lclstream_elog",
        "host": elog.url,
        "password": SECRET,
        "extra": {"counters_url": elog.counters_url("9"), "timeout": "5"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ARP_ELOG", json.dumps(conn))
    hook = ElogHook("arp_elog")
    assert hook.test_connection() == (True, "Elog connection configured (nothing was posted)")
    assert hook.client.timeout == 5.0
    hook.post_counters({"Events": 3})
    hook.post_run_params("mfxl1027522", 3, {"transfer": "ok"})
    assert [p.path for p in elog.posts] == [
        "/jid/ws/replace_counters/9",
        "/lgbk/mfxl1027522/ws/add_run_params",
    ]
    assert {p.authorization for p in elog.posts} == {SECRET}


def test_hook_rejects_unknown_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_lclstream.hooks.elog import ElogHook

    conn = {"conn_type": "lclstream_elog", "extra": {"counter_url": "typo"}}
    monkeypatch.setenv("AIRFLOW_CONN_BAD_ELOG", json.dumps(conn))
    ok, message = ElogHook("bad_elog").test_connection()
    assert not ok
    assert "unknown extra keys ['counter_url']" in message
