"""Secrets never show on a command line, in logs, XCom or job files.

* A SLURM JWT held in the Airflow connection (real slurmrestd: minted with ``scontrol token``,
  put in the connection's password; the deferrable operator submits a job through
  ``dag.test()``).
* The buffer's callback secret (a real ``lclstream-buffer`` process): given by file or
  environment, it signs the callbacks yet never appears in ``ps``, the log or the report.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.dags.dag_runner import register
from tests.standalone import slurm_environment


@pytest.mark.slurm
@pytest.mark.airflow
def test_token_is_nowhere_to_be_seen(
    slurm_service: None,
    airflow_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from airflow.sdk import DAG

    from airflow_provider_lclstream.operators.submit_job import SubmitJobOperator
    from tests.conftest import STATE_DIR

    env = slurm_environment(STATE_DIR)
    monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
    minted = subprocess.run(
        ["scontrol", "token", "username=root", "lifespan=600"],
        capture_output=True, text=True, check=True,
        env={"SLURM_CONF": env["SLURM_CONF"], "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    token = minted.stdout.strip().split("=", 1)[1]
    assert len(token) > 20
    conn = {
        "conn_type": "lclstream_slurm",
        "host": env["LCLSTREAM_SLURMRESTD_URL"],
        "login": "root",
        "password": token,
        "extra": {"job_defaults": {"partition": "debug"}},
    }
    monkeypatch.setenv("AIRFLOW_CONN_LCLS_SECRET", json.dumps(conn))
    with DAG(
        f"test_secret_{uuid.uuid4().hex[:8]}",
        schedule=None,
        start_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    ) as dag:
        SubmitJobOperator(
            task_id="job",
            conn_id="lcls_secret",
            job={
                "name": "secret",
                "script": "#!/bin/bash\necho job ran\n",
                "directory": str(tmp_path),
            },
            poll_interval=0.5,
        )
    register(dag)
    run = dag.test()
    out, err = capfd.readouterr()
    assert run.state == "success", out[-3000:]
    assert "job ran" in "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert token not in out + err
    ti = run.get_task_instance("job")
    for key in ("job_id", "job_url", "return_value"):
        assert token not in str(ti.xcom_pull(task_ids="job", key=key))
    for path in [*tmp_path.rglob("*"), *(airflow_db / "logs").rglob("*")]:
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path


class _Callbacks(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str | None]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((body, self.headers.get("x-hub-signature-256")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("how", ["file", "env"])
def test_callback_secret_is_never_on_a_command_line(how: str, tmp_path: Path) -> None:
    from airflow_provider_lclstream.buffer.callbacks import verify

    secret = f"cb-secret-{uuid.uuid4().hex}"
    _Callbacks.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Callbacks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    report = tmp_path / "report.json"
    args = [
        sys.executable, "-m", "airflow_provider_lclstream.buffer.cli",
        "--input", f"tcp://127.0.0.1:{_free_port()}",
        "--output", f"tcp://127.0.0.1:{_free_port()}",
        "--expect-producers", "1", "--idle-timeout", "2", "--drain-timeout", "1",
        "--callback", f"http://127.0.0.1:{server.server_address[1]}/cb", "--jobid", "j1",
        "--report", str(report), "-v",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "LCLSTREAM_CALLBACK_SECRET"}
    if how == "file":
        (tmp_path / "secret").write_text(secret + "\n")
        (tmp_path / "secret").chmod(0o600)
        args += ["--callback-secret-file", str(tmp_path / "secret")]
    else:
        env["LCLSTREAM_CALLBACK_SECRET"] = secret
    log = tmp_path / "buffer.log"
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        seen_ps = []
        while proc.poll() is None:  # the whole life of the buffer, as any user would see it
            seen_ps.append(subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True,
                                          text=True, check=True).stdout)  # fmt: skip
            time.sleep(0.2)
    server.shutdown()
    assert proc.returncode == 1  # no producer came: the stream failed, and said so
    assert any("buffer.cli" in t for t in seen_ps)
    assert all(secret not in text for text in seen_ps)
    assert secret not in log.read_text() and secret not in report.read_text()
    assert _Callbacks.received, "no callback arrived"
    for body, signature in _Callbacks.received:
        assert secret.encode() not in body
        assert verify(body, secret, signature)  # the secret was used, from the file or env


def test_callback_secret_argument_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_lclstream.buffer.cli", "--input", "tcp://h:1",
         "--output", "tcp://h:2", "--callback", "http://h/cb", "--callback-secret", "S"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--callback-secret-file" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slurm
@pytest.mark.kafka
@pytest.mark.airflow
@pytest.mark.psana
@pytest.mark.mpi
def test_kafka_password_is_nowhere_after_a_run_start(airflow_standalone: dict) -> None:
    """A run start read through the SASL listener (tests/standalone.py) makes a transfer; the
    Kafka password is then in no process's arguments, no Airflow log (components and tasks), no
    XCom of the transfer and no file the transfer wrote."""
    from tests.airflow_api import AirflowApi
    from tests.conftest import STATE_DIR
    from tests.integration.test_transfer_e2e import (
        GROUP,
        ensure_topics,
        produce_run_start,
        wait_for_group_member,
    )
    from tests.standalone import kafka_sasl_connection

    password = str(kafka_sasl_connection(airflow_standalone["kafka"])["password"])
    api = AirflowApi(
        airflow_standalone["url"], airflow_standalone["user"], airflow_standalone["password"]
    )
    bootstrap = airflow_standalone["kafka"]
    ensure_topics(bootstrap)
    api.unpause("lclstream_transfer")
    api.unpause("lclstream_on_run_start")
    wait_for_group_member(bootstrap, GROUP)
    known = {r["dag_run_id"] for r in api.runs("lclstream_transfer")}
    produce_run_start(bootstrap, "xpptut15", 14)
    run_id = api.wait_for_new_run("lclstream_transfer", known, timeout=120)
    assert api.wait_for_run("lclstream_transfer", run_id, timeout=300) == "success"
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert password not in ps
    xcoms = json.dumps(
        {t: api.xcom("lclstream_transfer", run_id, t) for t in ("start_buffer", "watch_transfer")}
    )
    assert password not in xcoms
    scanned = 0
    for root in (STATE_DIR / "airflow-standalone" / "logs", airflow_standalone["output"]):
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_size < 50 * 2**20:
                assert password.encode() not in path.read_bytes(), path
                scanned += 1
    assert scanned > 0
    print(f"Kafka password absent from ps, 2 XComs and {scanned} log/job/output files")
