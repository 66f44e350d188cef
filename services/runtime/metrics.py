"""Prometheus metrics of the processors and the proxy, read from their counters at scrape time.

Processors keep plain ``Counter[str]`` counters (no label lookups on the hot path); this
collector turns them into two metric families when Prometheus scrapes:

- ``inferledger_processed_total{component, counter}``: every counter (events accepted,
  duplicates, allocations, entries written, ...);
- ``inferledger_dead_letters_total{component, reason}``: the ``dlq.<reason>`` counters, one per
  rejection reason, for every record a component sent to a dead-letter topic.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

DLQ = "dlq."


class CountersCollector(Collector):
    def __init__(self, component: str, counters: Mapping[str, int]) -> None:
        self.component = component
        self.counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        processed = CounterMetricFamily(
            "inferledger_processed",
            "what a component counted, by counter",
            labels=["component", "counter"],
        )
        dead = CounterMetricFamily(
            "inferledger_dead_letters",
            "records a component sent to a dead-letter topic, by reason",
            labels=["component", "reason"],
        )
        for key, n in sorted(dict(self.counters).items()):
            if key.startswith(DLQ):
                dead.add_metric([self.component, key[len(DLQ) :]], n)
            else:
                processed.add_metric([self.component, key], n)
        yield processed
        yield dead


def registry_for(component: str, counters: Mapping[str, int]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(CountersCollector(component, counters))
    return registry


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass


def serve(
    listen: str, component: str, counters: Mapping[str, int], health: Any = None
) -> WSGIServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` in a background thread (the process's
    lifetime). ``/healthz`` answers 200 ``{"status": "ok"}``, or 503 with the dependencies that
    are failing now (a :class:`services.runtime.health.Health`)."""
    from services.runtime.health import HEALTH

    state = HEALTH if health is None else health
    metrics_app = make_wsgi_app(registry_for(component, counters))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/healthz":
            status = state.status(probe=True)
            body = json.dumps({"component": component, **status}).encode()
            code = "200 OK" if status["status"] == "ok" else "503 Service Unavailable"
            start_response(code, [("Content-Type", "application/json")])
            return [body]
        return metrics_app(environ, start_response)

    host, port = parse_listen(listen)
    server = make_server(host, port, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
