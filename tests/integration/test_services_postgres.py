"""The private PostgreSQL of ``scripts/services/postgres.sh``: start, connect by its URL, stop."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import SERVICES_DIR, service_unavailable

pytestmark = pytest.mark.postgres


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Postgres:
    """postgres.sh for a services dir and a port of this test's own."""

    def __init__(self, services_dir: Path, port: int) -> None:
        self.port = port
        self.env = {
            **os.environ,
            "LCLSTREAM_SERVICES_DIR": str(services_dir),
            "LCLSTREAM_POSTGRES_PORT": str(port),
        }

    def __call__(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SERVICES_DIR / "postgres.sh"), action],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
        )


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Postgres]:
    script = Postgres(tmp_path / "services", free_port())
    try:
        yield script
    finally:
        script("purge")  # stop, and remove the cluster (it lives outside tmp_path)


def test_start_connect_stop(postgres: Postgres, tmp_path: Path) -> None:
    started = postgres("start")
    if started.returncode != 0:
        service_unavailable("postgres", (started.stdout + started.stderr).strip()[-2000:])
    state = (tmp_path / "services" / "postgres").resolve()  # the link to the cluster's folder
    assert (state / "data" / "PG_VERSION").is_file()

    url = postgres("url").stdout.strip()
    assert url.startswith("postgresql://airflow:")
    assert url.endswith(f"@127.0.0.1:{postgres.port}/airflow")
    assert postgres("status").returncode == 0
    assert f"LCLSTREAM_POSTGRES_URL='{url}'" in postgres("env").stdout

    with psycopg2.connect(url, connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1, current_user, current_database(), host(inet_server_addr())")
        assert cur.fetchone() == (1, "airflow", "airflow", "127.0.0.1")
        cur.execute("SHOW max_connections")
        assert cur.fetchone() == ("300",)
        cur.execute("CREATE TABLE t (x int)")  # the role owns its database's public schema
    conn.close()

    # A password is required over TCP.
    wrong = url.replace("postgresql://airflow:", "postgresql://airflow:not-", 1)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(wrong, connect_timeout=10)

    again = postgres("start")  # idempotent: the running server is left alone
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr

    stopped = postgres("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not port_open(postgres.port)
    assert postgres("status").returncode != 0

    assert postgres("purge").returncode == 0
    assert not state.exists()
    assert not (tmp_path / "services" / "postgres").is_symlink()
