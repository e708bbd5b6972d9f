"""HTTP metrics: Prometheus text at ``/metrics``, JSON at ``/stats`` (stdlib server thread)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

STATES = ("running", "draining", "done", "failed")


def prometheus_text(stats: dict[str, Any]) -> str:
    """Render the gauges and counters of ``Buffer.stats()`` in the Prometheus text format."""
    p = "lclstream_buffer_"
    lines: list[str] = []

    def metric(name: str, kind: str, value: float, help_: str, labels: str = "") -> None:
        if not any(line.startswith(f"# TYPE {p}{name} ") for line in lines):
            lines.append(f"# HELP {p}{name} {help_}")
            lines.append(f"# TYPE {p}{name} {kind}")
        lines.append(f"{p}{name}{labels} {value}")

    for side in ("in", "out"):
        metric(f"messages_{side}_total", "counter", stats[f"messages_{side}"], f"Messages {side}.")
        metric(f"bytes_{side}_total", "counter", stats[f"bytes_{side}"], f"Bytes {side}.")
        metric(f"{side}_messages_per_second", "gauge", stats["rates"][f"messages_{side}"], "Rate.")
        metric(f"{side}_bytes_per_second", "gauge", stats["rates"][f"bytes_{side}"], "Rate.")
    metric("buffered_messages", "gauge", stats["buffered_messages"], "Messages held in the FIFO.")
    metric("buffered_bytes", "gauge", stats["buffered_bytes"], "Bytes held in the FIFO.")
    metric("capacity_bytes", "gauge", stats["capacity_bytes"], "FIFO byte cap.")
    metric("capacity_messages", "gauge", stats["capacity_messages"], "FIFO message cap.")
    metric("dropped_messages_total", "counter", stats["dropped_messages"], "Left undelivered.")
    metric("consumers_connected", "gauge", stats["consumers"]["connected"], "Consumers now.")
    metric("consumers_lost_total", "counter", stats["consumers"]["lost"], "Left mid-stream.")
    prod = stats["producers"]
    for name in ("seen", "ended", "connected"):
        metric(f"producers_{name}", "gauge", prod[name], f"Producers {name} this stream.")
    metric("producers_vanished", "gauge", len(prod["vanished"]), "Closed without EOS.")
    metric("streams_total", "counter", stats["streams_finished"], "Streams finished.")
    for state in STATES:
        value = 1 if stats["state"] == state else 0
        metric("state", "gauge", value, "1 for the current state.", f'{{state="{state}"}}')
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serve ``stats()`` on a daemon thread; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, host: str, port: int, stats: Callable[[], dict[str, Any]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                if path == "/metrics":
                    body, ctype = prometheus_text(stats()).encode(), "text/plain; version=0.0.4"
                elif path == "/stats":
                    body, ctype = json.dumps(stats(), indent=1).encode(), "application/json"
                else:
                    self.send_error(404, "try /metrics or /stats")
                    return
                self.send_response(200)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="buffer-metrics", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
