"""Psik-style lifecycle callbacks: POST ``{jobid, jobndx, state, info}``, HMAC-signed.

The body is signed like a GitHub/psik webhook: header ``x-hub-signature-256:
sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with the secret>`` (``protocol.sign_body``,
shared with the psik backend). Posts run on a
background thread so a slow receiver never stalls the data path; failures are logged, not raised.
"""

from __future__ import annotations

import json
import logging
import queue
import threading

import httpx

from airflow_provider_lclstream.protocol import SIGNATURE_HEADER
from airflow_provider_lclstream.protocol import sign_body as sign
from airflow_provider_lclstream.protocol import verify_signature as verify

__all__ = ["SIGNATURE_HEADER", "CallbackSender", "sign", "verify"]

log = logging.getLogger(__name__)


class CallbackSender:
    """Queue callbacks and POST them in order on one daemon thread."""

    def __init__(self, url: str, secret: str | None, jobid: str, timeout_s: float = 5.0) -> None:
        self.url, self.secret, self.jobid, self.timeout_s = url, secret, jobid, timeout_s
        self.queue: queue.Queue[dict[str, object] | None] = queue.Queue()
        self.sent: list[tuple[str, int]] = []  # (state, HTTP status or -1)
        self.thread = threading.Thread(target=self._run, name="buffer-callbacks", daemon=True)
        self.thread.start()

    def post(self, state: str, jobndx: int, info: int = 0) -> None:
        self.queue.put({"jobid": self.jobid, "jobndx": jobndx, "state": state, "info": info})

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while (payload := self.queue.get()) is not None:
                body = json.dumps(payload, sort_keys=True).encode()
                headers = {"content-type": "application/json"}
                if self.secret:
                    headers[SIGNATURE_HEADER] = sign(body, self.secret)
                try:
                    status = client.post(self.url, content=body, headers=headers).status_code
                    if status >= 300:
                        log.warning(
                            "callback %s to %s answered HTTP %s", payload["state"], self.url, status
                        )
                except httpx.HTTPError as err:
                    status = -1
                    log.warning("callback %s to %s failed: %s", payload["state"], self.url, err)
                self.sent.append((str(payload["state"]), status))

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (up to ``timeout_s``), then stop the thread."""
        self.queue.put(None)
        self.thread.join(timeout_s)
