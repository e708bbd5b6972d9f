"""Test doubles for the API: an in-memory TransferStore, a fake buffer /stats server, certs."""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from airflow_provider_lclstream.api.models import Submission, TransferState
from airflow_provider_lclstream.api.store import (
    CANCEL_NOTE,
    START_BUFFER,
    TASK_IDS,
    TransferFinished,
    TransferNotFound,
    TransferRecord,
    transport_of,
)


class MemoryTransferStore:
    """TransferStore in a dict; tests move transfers along with :meth:`advance`."""

    def __init__(self) -> None:
        self.records: dict[str, TransferRecord] = {}
        self.confs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def create(self, submission: Submission, user: str) -> TransferRecord:
        with self.lock:
            tid = f"lcls_test_{len(self.records):04d}"
            conf = submission.conf(user)
            self.confs[tid] = conf
            record = TransferRecord(
                id=tid,
                user=user,
                created=datetime.now(UTC),
                dag_run_state="queued",
                tasks={t: None for t in TASK_IDS},
                label=submission.label,
                batch_size=submission.batch_size,
                kind=submission.kind,
                transport=transport_of(conf),
            )
            self.records[tid] = record
            return record

    def advance(self, tid: str, buffer: dict[str, Any] | None = None, **tasks: str) -> None:
        """Mark the run running, set task states; ``buffer`` is start_buffer's XCom."""
        record = self.records[tid]
        record.dag_run_state = "running"
        record.tasks.update(tasks)
        if buffer is not None:
            record.buffer = buffer
            record.tasks[START_BUFFER] = "success"

    def list(
        self, *, user: str | None = None, state: TransferState | None = None, limit: int = 100
    ) -> list[TransferRecord]:
        out = [r for r in reversed(self.records.values()) if user is None or r.user == user]
        return [r for r in out if state is None or r.state == state][:limit]

    def get(self, transfer_id: str) -> TransferRecord:
        try:
            return self.records[transfer_id]
        except KeyError:
            raise TransferNotFound(transfer_id) from None

    def cancel(self, transfer_id: str, by: str) -> TransferRecord:
        record = self.get(transfer_id)
        if record.dag_run_state not in ("queued", "running"):
            raise TransferFinished(f"transfer {transfer_id} already ended")
        record.note = f"{CANCEL_NOTE}{by}"
        record.dag_run_state = "failed"
        record.tasks["stop_jobs"] = "success"
        return record


class FakeBuffer:
    """A buffer's metrics endpoint: ``GET /stats`` with counters that grow with time."""

    def __init__(
        self, msg_rate: float = 20.0, msg_bytes: int = 2_000_000, wobble: float = 0.0
    ) -> None:
        self.t0 = time.monotonic()
        self.wobble = wobble
        self.msg_rate = msg_rate
        self.msg_bytes = msg_bytes
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/stats":
                    self.send_error(404)
                    return
                body = json.dumps(fake.stats()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def stats(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        n = int(elapsed * self.msg_rate) + 1
        rate_m = self.msg_rate * (1 + self.wobble * math.sin(elapsed * 3))
        return {
            "state": "running",
            "messages_in": n,
            "bytes_in": n * self.msg_bytes,
            "messages_out": max(n - 1, 0),
            "bytes_out": max(n - 1, 0) * self.msg_bytes,
            "rates": {
                "messages_in": rate_m,
                "bytes_in": rate_m * self.msg_bytes,
                "messages_out": rate_m,
                "bytes_out": rate_m * self.msg_bytes,
            },
            "producers": {"seen": 2, "ended": 0, "expected": 2, "per_producer": {}},
        }

    def __enter__(self) -> FakeBuffer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


SYNTHETIC = {"synthetic": True, "events": 100, "img_per_file": 10, "ranks": 2}
