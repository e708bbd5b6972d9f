"""Helpers for tests that run ``lclstreamer`` under ``mpiexec`` against a receiver."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def run_streamer(
    mpiexec: str, ranks: int, config: Path, *extra: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [mpiexec, "-n", str(ranks), str(BIN / "lclstreamer"), "-c", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def total_line(stdout: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith("TOTAL "):
            return json.loads(line[len("TOTAL ") :])
    raise AssertionError(f"no TOTAL line in:\n{stdout}")


class BackgroundReceiver:
    """``receive_messages`` in a thread, collecting per-message event counts."""

    def __init__(self, url: str, library: str, bind: bool, producers: int) -> None:
        self.report = ReceiveReport(producers)
        self.events_per_message: list[int] = []
        self.thread = threading.Thread(
            target=self._run, args=(url, library, bind, producers), daemon=True
        )
        self.thread.start()

    def _run(self, url: str, library: str, bind: bool, producers: int) -> None:
        for message in receive_messages(
            url, library, bind=bind, expect_producers=producers, timeout_s=60, report=self.report
        ):
            self.events_per_message.append(message.events)

    def join(self, timeout: float = 90) -> ReceiveReport:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "receiver did not finish"
        return self.report
