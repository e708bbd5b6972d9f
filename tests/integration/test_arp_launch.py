"""``lclstream-arp-launch`` end to end: a real Airflow 3.3 (scripts/services/airflow-standalone.sh)
runs ``arp_smoke`` (tests/integration/arp_dags/) and the launcher posts counters to a FAKE Elog.

The Elog is tests/fake_elog.py, a stdlib HTTP server implementing only the documented ARP counters
endpoint; Airflow is real (api-server, scheduler, dag-processor, triggerer, LocalExecutor).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import REPO
from tests.fake_elog import FakeElog

pytestmark = pytest.mark.airflow

SECRET = "Bearer arp-job-secret"
ARP_VARIABLES = ("EXPERIMENT", "RUN_NUM", "JID_UPDATE_COUNTERS", "Authorization")
PASSWORD = os.environ.get("LCLSTREAM_AIRFLOW_PASSWORD", "admin")


@pytest.fixture(scope="session")
def airflow_url(airflow_standalone: dict[str, Any]) -> str:
    """The shared running Airflow (tests/conftest.py), whose DAGs include ``arp_smoke``."""
    return str(airflow_standalone["url"])


@pytest.fixture
def elog() -> Iterator[FakeElog]:
    fake = FakeElog(require_authorization=SECRET).start()
    yield fake
    fake.stop()


def launch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow_provider_lclstream.arp.launch", *args]


def launch_env(url: str | None = None, **env: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LCLSTREAM_AIRFLOW", "ARP_")) and k not in ARP_VARIABLES
    }
    base.update(LCLSTREAM_AIRFLOW_USER="admin", LCLSTREAM_AIRFLOW_PASSWORD=PASSWORD)
    if url:
        base["LCLSTREAM_AIRFLOW_URL"] = url
    base.update(env)
    return base


def test_successful_and_failing_runs(airflow_url: str, elog: FakeElog) -> None:
    common = ["--dag-id", "arp_smoke", "--poll-interval", "1", "--timeout", "120"]
    ok_env = launch_env(
        airflow_url,
        EXPERIMENT="xpptut15", RUN_NUM="12", ARP_JOB_ID="job42", ARP_LOCATION="S3DF",
        JID_UPDATE_COUNTERS=elog.counters_url("job42"), Authorization=SECRET,
    )  # fmt: skip
    bad_env = launch_env(airflow_url, EXPERIMENT="xpptut15", RUN_NUM="13")
    # One after the other: the test Airflow runs on SQLite, whose single writer made concurrent
    # triggers time out under load (PostgreSQL, as in docker-compose, has no such limit).
    ok = subprocess.Popen(
        launch_cmd(*common), env=ok_env, cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    ok_out, ok_err = ok.communicate(timeout=200)
    bad = subprocess.Popen(
        launch_cmd(*common, "--conf", '{"fail": true}'), env=bad_env, cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    bad_out, bad_err = bad.communicate(timeout=200)

    assert ok.returncode == 0, ok_out + ok_err
    for line in ("task show: success", "task check: success", "succeeded"):
        assert line in ok_out, ok_out
    assert '"arp_job_id": "job42"' in ok_out
    for secret in (SECRET, "arp-job-secret", PASSWORD + "\n"):
        assert secret not in ok_out + ok_err
    latest = elog.latest_counters()
    assert latest["State"] == "success"
    assert latest["Tasks done"] == "2/2"
    assert latest["Airflow DAG"] == "arp_smoke"
    assert latest["Airflow run"].startswith("arp__xpptut15__r0012__")
    assert len(elog.counters()) >= 3  # queued, progress, success
    assert {p.path for p in elog.posts} == {"/jid/ws/replace_counters/job42"}

    assert bad.returncode == 1, bad_out + bad_err
    assert "task check: failed" in bad_out
    assert "failed tasks: check" in bad_err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EXPERIMENT": "xpptut15", "RUN_NUM": "abc"}, "run number 'abc'"),
        ({"EXPERIMENT": "x;rm -rf /", "RUN_NUM": "1"}, "experiment 'x;rm -rf /'"),
        ({"RUN_NUM": "1"}, "no experiment"),
    ],
)
def test_bad_input_exits_2(env: dict[str, str], message: str) -> None:
    """Rejected before any network call: no Airflow needed."""
    done = subprocess.run(
        launch_cmd(), env=launch_env("http://127.0.0.1:9", **env), cwd=REPO,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "lclstream-arp-launch: error:" in done.stderr
