"""A FAKE LCLS Elog for tests: stdlib ``http.server`` on 127.0.0.1 in a thread.

It is not the Elog. It implements only the documented shape of the two endpoints the provider
posts to: the ARP job counters URL that ARP hands a batch job as ``JID_UPDATE_COUNTERS``
(``POST .../jid/ws/replace_counters/<job>`` with a JSON list ``[{"key": ..., "value": ...}]``;
each post replaces the job's counters) and the logbook's run parameters service
(``POST .../lgbk/<experiment>/ws/add_run_params?run_num=<run>`` with a JSON object). It records
every request and can require an ``Authorization`` value or answer with given errors first.

For psana2 it also answers the logbook's run file list, as the logbook does for live mode
(``GET .../lgbk/<experiment>/ws/<run>/current_files_for_live_mode`` ->
``{"success": true, "value": [paths of the run's xtc2 files]}``) from
:meth:`FakeElog.add_run_files`; an unknown run lists no files. Point psana at it with
``LCLSTREAM_LOGBOOK_URL`` = ``fake.url`` (streamer/sources/psana_logbook.py).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Post:
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: Any


@dataclass
class FakeElog:
    require_authorization: str | None = None
    #: status codes answered (in order) before the next requests succeed
    fail_next: list[int] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    #: (experiment, run) -> the paths ``current_files_for_live_mode`` lists
    run_files: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    #: paths of every GET, in order
    gets: list[str] = field(default_factory=list)
    #: the port to listen on (0: any free one)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def counters_url(self, job: str = "job-1") -> str:
        return f"{self.url}/jid/ws/replace_counters/{job}"

    def counters(self) -> list[list[dict[str, str]]]:
        """Bodies of the accepted counters posts, oldest first."""
        with self._lock:
            return [p.body for p in self.posts if "/replace_counters/" in p.path]

    def latest_counters(self) -> dict[str, str]:
        posts = self.counters()
        return {c["key"]: c["value"] for c in posts[-1]} if posts else {}

    def add_run_files(self, experiment: str, run: int, paths: list[str]) -> None:
        """What the logbook lists for a run (the DAQ registers each stream's files)."""
        with self._lock:
            self.run_files[(experiment, int(run))] = list(paths)

    def start(self) -> FakeElog:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _reply(self, code: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                parts = urlsplit(self.path).path.strip("/").split("/")
                with fake._lock:
                    fake.gets.append(self.path)
                # .../lgbk/<experiment>/ws/<run>/current_files_for_live_mode
                if len(parts) >= 5 and parts[-1] == "current_files_for_live_mode":
                    experiment, run = parts[-4], parts[-2]
                    with fake._lock:
                        files = fake.run_files.get((experiment, int(run)), [])
                    self._reply(200, {"success": True, "value": files})
                    return
                self._reply(404, {"success": False, "errormsg": f"no endpoint {self.path}"})

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                parts = urlsplit(self.path)
                with fake._lock:
                    if fake.fail_next:
                        self._reply(fake.fail_next.pop(0), {"success": False, "errormsg": "fake"})
                        return
                auth = self.headers.get("Authorization")
                if fake.require_authorization is not None and auth != fake.require_authorization:
                    self._reply(403, {"success": False, "errormsg": "bad Authorization"})
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._reply(400, {"success": False, "errormsg": "body is not JSON"})
                    return
                if "/replace_counters/" in parts.path:
                    ok = isinstance(body, list) and all(
                        isinstance(c, dict) and set(c) == {"key", "value"} for c in body
                    )
                elif parts.path.endswith("/ws/add_run_params"):
                    ok = isinstance(body, dict) and "run_num" in parse_qs(parts.query)
                else:
                    self._reply(404, {"success": False, "errormsg": f"no endpoint {parts.path}"})
                    return
                if not ok:
                    self._reply(400, {"success": False, "errormsg": "unexpected body shape"})
                    return
                with fake._lock:
                    fake.posts.append(Post(parts.path, parse_qs(parts.query), auth, body))
                self._reply(200, {"success": True})

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
