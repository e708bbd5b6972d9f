"""HTTP metrics: Prometheus text at ``/metrics``, JSON at ``/stats`` (stdlib server thread).

The Prometheus exposition is ``prometheus_client``'s: a collector turns each ``/stats`` snapshot
into metric families (names unchanged since the hand-written exposition), and the library's
process collector adds the buffer process's memory, CPU and open files (``process_*``).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from airflow_provider_lclstream.buffer.stats import STATES, StreamSnapshot, parse_stats

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

PREFIX = "lclstream_buffer_"


def metric_families(s: StreamSnapshot) -> Iterator[Metric]:
    """The buffer's gauges and counters for one stats snapshot."""
    p = PREFIX

    def counter(name: str, value: float, help_: str) -> Metric:
        return CounterMetricFamily(f"{p}{name}", help_, value=value)

    def gauge(name: str, value: float, help_: str) -> Metric:
        return GaugeMetricFamily(f"{p}{name}", help_, value=value)

    for side in ("in", "out"):
        yield counter(f"messages_{side}_total", getattr(s, f"messages_{side}"), f"Messages {side}.")
        yield counter(f"bytes_{side}_total", getattr(s, f"bytes_{side}"), f"Bytes {side}.")
        yield gauge(f"{side}_messages_per_second", getattr(s.rates, f"messages_{side}"), "Rate.")
        yield gauge(f"{side}_bytes_per_second", getattr(s.rates, f"bytes_{side}"), "Rate.")
    yield gauge("buffered_messages", s.buffered_messages, "Messages held in the FIFO.")
    yield gauge("buffered_bytes", s.buffered_bytes, "Bytes held in the FIFO.")
    yield gauge("capacity_bytes", s.capacity_bytes, "FIFO byte cap.")
    yield gauge("capacity_messages", s.capacity_messages, "FIFO message cap.")
    yield counter("dropped_messages_total", s.dropped_messages, "Left undelivered.")
    yield gauge("consumers_connected", s.consumers.connected, "Consumers now.")
    yield counter("consumers_lost_total", s.consumers.lost, "Left mid-stream.")
    prod = s.producers
    for name in ("seen", "ended", "connected"):
        yield gauge(f"producers_{name}", getattr(prod, name), f"Producers {name} this stream.")
    yield gauge("producers_vanished", len(prod.vanished), "Closed without EOS.")
    yield counter("streams_total", s.streams_finished, "Streams finished.")
    state = GaugeMetricFamily(f"{p}state", "1 for the current state.", labels=["state"])
    for name in STATES:
        state.add_metric([name], 1 if s.state == name else 0)
    yield state


class _StatsCollector:
    """A ``prometheus_client`` collector that reads the buffer's stats on every scrape."""

    def __init__(self, stats: Callable[[], StreamSnapshot]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self.stats())


def metrics_registry(
    stats: Callable[[], StreamSnapshot], process: bool = True
) -> CollectorRegistry:
    """A registry of the buffer's metrics (and, with ``process``, this process's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats))
    if process:
        ProcessCollector(registry=registry)
    return registry


def prometheus_text(stats: StreamSnapshot | Mapping[str, Any]) -> str:
    """The Prometheus text format of one stats snapshot (a model or its JSON document)."""
    snapshot = stats if isinstance(stats, StreamSnapshot) else parse_stats(stats)
    return generate_latest(metrics_registry(lambda: snapshot, process=False)).decode()


class MetricsServer:
    """Serve ``stats()`` on a daemon thread; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, host: str, port: int, stats: Callable[[], StreamSnapshot]) -> None:
        registry = metrics_registry(stats)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                if path == "/metrics":
                    body, ctype = generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
                elif path == "/stats":
                    document = stats().model_dump(mode="json")
                    body, ctype = json.dumps(document, indent=1).encode(), "application/json"
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
