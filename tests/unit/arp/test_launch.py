"""Input validation of ``lclstream-arp-launch`` (no Airflow, no network)."""

from __future__ import annotations

import pytest

from airflow_provider_lclstream.arp.launch import (
    EXIT_USAGE,
    ArpJob,
    LaunchError,
    arp_job_from,
    build_parser,
    main,
    parse_extra_conf,
)


def job(env: dict[str, str], *argv: str) -> ArpJob:
    return arp_job_from(build_parser().parse_args(list(argv)), env)


def test_arp_environment_becomes_the_conf() -> None:
    env = {
        "EXPERIMENT": "mfxl1027522",
        "RUN_NUM": " 0042 ",
        "ARP_JOB_ID": "a1-b2",
        "ARP_LOCATION": "S3DF",
    }
    assert job(env).conf() == {
        "experiment": "mfxl1027522",
        "run": 42,
        "arp_job_id": "a1-b2",
        "arp_location": "S3DF",
    }
    assert job(env, "--run", "7", "--experiment", "xpptut15").conf()["run"] == 7


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EXPERIMENT": "x;rm -rf /", "RUN_NUM": "1"}, "not a plain name"),
        ({"EXPERIMENT": "$(id)", "RUN_NUM": "1"}, "not a plain name"),
        ({"EXPERIMENT": "xpp", "RUN_NUM": "abc"}, "not a non-negative integer"),
        ({"EXPERIMENT": "xpp", "RUN_NUM": "-1"}, "not a non-negative integer"),
        ({"EXPERIMENT": "xpp", "RUN_NUM": "1", "ARP_JOB_ID": "a b"}, "ARP job id"),
        ({"RUN_NUM": "1"}, "no experiment"),
        ({"EXPERIMENT": "xpp"}, "no run number"),
    ],
)
def test_bad_input_is_a_usage_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(LaunchError, match=message) as info:
        job(env)
    assert info.value.code == EXIT_USAGE


def test_extra_conf_adds_but_does_not_override() -> None:
    base = {"experiment": "xpp", "run": 1}
    assert parse_extra_conf('{"fail": true, "run": 1}', base) == {"fail": True, **base}
    with pytest.raises(LaunchError, match="may not change run"):
        parse_extra_conf('{"run": 2}', base)
    with pytest.raises(LaunchError, match="JSON object"):
        parse_extra_conf("[1]", base)
    with pytest.raises(LaunchError, match="not valid JSON"):
        parse_extra_conf("{", base)


def test_main_exits_2_and_never_prints_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"EXPERIMENT": "xpp", "RUN_NUM": "x", "LCLSTREAM_AIRFLOW_PASSWORD": "s3cret"}
    with pytest.raises(SystemExit) as info:
        main(["--username", "admin"], env)
    assert info.value.code == 2
    out = capsys.readouterr()
    assert "run number 'x'" in out.err
    assert "s3cret" not in out.out + out.err


def test_missing_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([], {"EXPERIMENT": "xpp", "RUN_NUM": "1"})
    assert info.value.code == 2
    assert "LCLSTREAM_AIRFLOW_USER" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"], {})
    assert info.value.code == 0
    assert "Exit codes" in capsys.readouterr().out


def test_trigger_retries_a_server_error_and_adopts_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A POST without answer or with a 500 (e.g. SQLite busy) is retried; a 409 then means an
    earlier try made the run.

    httpx.MockTransport stands in for Airflow's REST API v2 (no network)."""
    import httpx

    from airflow_provider_lclstream.arp import launch

    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/auth/token":
            return httpx.Response(200, json={"access_token": "t"})
        if request.method == "POST" and len(calls) == 2:
            raise httpx.ReadTimeout("timed out", request=request)
        if request.method == "POST":
            return httpx.Response(500 if len(calls) == 3 else 409, json={"detail": "x"})
        return httpx.Response(200, json={"dag_run_id": "arp__r1", "state": "queued"})

    monkeypatch.setattr(launch.time, "sleep", lambda s: None)
    client = launch.AirflowClient("http://airflow", "admin", "pw")
    client._http = httpx.Client(base_url="http://airflow", transport=httpx.MockTransport(handler))
    launcher = launch.Launcher(
        client, "d", {}, run_id="arp__r1", elog=None, poll_interval=0.1, dag_wait=1,
        max_poll_errors=1,
    )  # fmt: skip
    assert launcher.trigger() == "arp__r1"
    assert calls == [
        "POST /auth/token",
        "POST /api/v2/dags/d/dagRuns",
        "POST /api/v2/dags/d/dagRuns",
        "POST /api/v2/dags/d/dagRuns",
        "GET /api/v2/dags/d/dagRuns/arp__r1",
    ]


def test_trigger_without_our_run_id_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a run id a retry could make a second run: a 500 fails at once."""
    import httpx

    from airflow_provider_lclstream.arp import launch

    posts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(200, json={"access_token": "t"})
        posts.append(request.url.path)
        return httpx.Response(500, json={"detail": "database is locked"})

    monkeypatch.setattr(launch.time, "sleep", lambda s: pytest.fail("no retry expected"))
    client = launch.AirflowClient("http://airflow", "admin", "pw")
    client._http = httpx.Client(base_url="http://airflow", transport=httpx.MockTransport(handler))
    launcher = launch.Launcher(
        client, "d", {}, run_id=None, elog=None, poll_interval=0.1, dag_wait=1, max_poll_errors=1
    )
    with pytest.raises(LaunchError, match="HTTP 500: database is locked"):
        launcher.trigger()
    assert posts == ["/api/v2/dags/d/dagRuns"]
