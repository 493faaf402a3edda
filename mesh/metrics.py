"""Prometheus metrics and a health endpoint, on localhost, from the peer's statistics().

Every long-lived object in the peer offers ``statistics()`` returning plain
numbers; this module turns the daemon's merged statistics into Prometheus
metrics at scrape time (no double bookkeeping). Counters end in ``_total``
by Prometheus convention; the rest are gauges.

Endpoints (a small WSGI server in a thread, so a scrape never waits on the
trio loop): ``/metrics`` (Prometheus text format) and ``/health`` (JSON:
``{"status": "ok" | "starting" | "stopping", "peer_id": ...}``, 200 when ok
else 503).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["MetricsServer", "metric_families"]

_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")

# statistics keys that only ever grow: exported as counters
_COUNTER_HINTS = ("_in", "_out", "errors", "dropped", "fired", "requests", "sent", "received", "bad", "rejected",
                  "writes", "commits", "events", "timeouts", "failures", "total", "refused", "served", "fetched")


def _metric_name(key: str) -> str:
    return "arcnet_" + _NAME_RE.sub("_", key).strip("_").lower()


def metric_families(stats: dict[str, Any], labels: dict[str, str]) -> list:
    fams = []
    names = sorted(labels)
    values = [labels[n] for n in names]
    for key in sorted(stats):
        v = stats[key]
        if isinstance(v, bool):
            v = int(v)
        if not isinstance(v, (int, float)):
            continue
        name = _metric_name(key)
        if any(h in key for h in _COUNTER_HINTS) and isinstance(v, int) and v >= 0:
            fam = CounterMetricFamily(name, f"{key} (counter)", labels=names)
        else:
            fam = GaugeMetricFamily(name, f"{key}", labels=names)
        fam.add_metric(values, float(v))
        fams.append(fam)
    return fams


class _Collector:
    def __init__(self, source: Callable[[], dict[str, Any]], labels: dict[str, str]):
        self.source = source
        self.labels = labels

    def collect(self):
        try:
            stats = self.source()
        except Exception:  # a scrape must never take anything down
            stats = {"metrics_collect_errors": 1}
        yield from metric_families(stats, self.labels)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


class MetricsServer:
    """Serve /metrics and /health on ``host:port`` in a daemon thread."""

    def __init__(self, listen: str, source: Callable[[], dict[str, Any]], health: Callable[[], dict[str, Any]],
                 labels: dict[str, str]):
        host, _, port = listen.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(source, labels))
        self.health = health
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            body = generate_latest(self.registry)
            start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])
            return [body]
        if path == "/health":
            h = self.health()
            code = "200 OK" if h.get("status") == "ok" else "503 Service Unavailable"
            start_response(code, [("Content-Type", "application/json")])
            return [json.dumps(h).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /health\n"]

    def start(self) -> int:
        self._server = make_server(self.host, self.port, self._app, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="arcnet-metrics", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
