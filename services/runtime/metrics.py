"""Prometheus metrics of the processors and the proxy, read from their state at scrape time.

Processors keep plain ``Counter[str]`` counters (no label lookups on the hot path); this
collector turns them into metric families when Prometheus scrapes:

- ``inferledger_processed_total{component, counter}``: every counter (events accepted,
  duplicates, allocations, entries written, ...);
- ``inferledger_dead_letters_total{component, reason}``: the ``dlq.<reason>`` counters, one per
  rejection reason, for every record a component sent to a dead-letter topic.

Beside them (docs/operations.md, "Watching it: Prometheus and Grafana", lists every metric):
:class:`ConsumerLagCollector` (consumer lag per topic and partition, from the aiokafka
consumer's own bookkeeping), :class:`Histogram` (a histogram observed with plain list
arithmetic, exposed at scrape time), :class:`HealthCollector` (``/healthz`` as a gauge), and
:class:`GaugesCollector` (gauges and counters a processor computes when asked).
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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


def registry_for(
    component: str, counters: Mapping[str, int], collectors: Iterable[Collector] = ()
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(CountersCollector(component, counters))
    for collector in collectors:
        registry.register(collector)
    return registry


class Histogram:
    """A histogram without labels or locks, observed by the one task that owns it and read at
    scrape time (a scrape may see a count one observation ahead of the sum: harmless).

    ``bounds`` are the upper bounds of the buckets, ascending; ``+Inf`` is added."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """Prometheus' buckets (``le`` upper bound, cumulative count) and the sum."""
        total = 0.0
        out: list[tuple[str, float]] = []
        for bound, n in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out, self.sum


class HistogramCollector(Collector):
    """One histogram family from :class:`Histogram` objects, one per value of ``label``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        component: str,
        label: str,
        histograms: Mapping[str, Histogram],
    ) -> None:
        self.name, self.documentation = name, documentation
        self.component, self.label, self.histograms = component, label, histograms

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=["component", self.label]
        )
        for value, histogram in sorted(self.histograms.items()):
            buckets, total = histogram.cumulative()
            family.add_metric([self.component, value], buckets, total)
        yield family


#: one sample of a gauge or counter family: (label values, value)
Sample = tuple[Sequence[str], float]


class GaugesCollector(Collector):
    """Families a processor computes when Prometheus asks: ``read()`` returns
    ``{name: (kind, documentation, label names, samples)}`` with kind ``gauge`` or
    ``counter`` (a counter's name without ``_total``). A failing ``read`` yields nothing (a
    scrape never fails because a processor is between states)."""

    def __init__(
        self, read: Callable[[], Mapping[str, tuple[str, str, Sequence[str], list[Sample]]]]
    ) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        try:
            families = self.read()
        except Exception:  # e.g. a dict resized by the processor while read: next scrape
            return
        for name, (kind, documentation, labels, samples) in families.items():
            family: GaugeMetricFamily | CounterMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, documentation, labels=list(labels))
            else:
                family = GaugeMetricFamily(name, documentation, labels=list(labels))
            for values, value in samples:
                family.add_metric(list(values), value)
            yield family


class ConsumerLagCollector(Collector):
    """Consumer lag per topic and partition, read at scrape time from the aiokafka consumer's
    own bookkeeping (no request to the broker):

    - ``inferledger_consumer_lag_messages``: the partition's high watermark (the end offset, as
      the latest fetch response gave it) minus the consumer's position (the next offset it
      will fetch): records on the broker this worker has not read yet;
    - ``inferledger_consumer_uncommitted_messages``: the high watermark minus the offset the
      processor last committed (what a restart would read again), for the partitions it
      commits (the attribution processor holds events until their buckets close, so this
      includes allowed lateness; rates and bills are never committed: re-read on each start).

    ``consumer()`` returns the aiokafka consumer, or None before it exists; ``committed`` is
    the processor's record of the offsets it committed, ``{(topic, partition): offset}``."""

    def __init__(
        self,
        component: str,
        consumer: Callable[[], Any],
        committed: Mapping[tuple[str, int], int],
    ) -> None:
        self.component = component
        self.consumer = consumer
        self.committed = committed

    def rows(self) -> list[tuple[str, int, int, int | None, int | None]]:
        """(topic, partition, high watermark, position, committed) of each assigned partition
        with a known high watermark."""
        consumer = self.consumer()
        subscription = getattr(getattr(consumer, "_subscription", None), "subscription", None)
        assignment = getattr(subscription, "assignment", None)
        if assignment is None:
            return []
        committed = dict(self.committed)
        out = []
        for tp in sorted(assignment.tps):
            state = assignment.state_value(tp)
            if state is None or state.highwater is None:
                continue
            position = state.position if state.has_valid_position else None
            out.append(
                (
                    tp.topic,
                    tp.partition,
                    state.highwater,
                    position,
                    committed.get((tp.topic, tp.partition)),
                )
            )
        return out

    def collect(self) -> Iterator[Metric]:
        labels = ["component", "topic", "partition"]
        lag = GaugeMetricFamily(
            "inferledger_consumer_lag_messages",
            "records on the broker not yet read: high watermark minus the consumer's position",
            labels=labels,
        )
        uncommitted = GaugeMetricFamily(
            "inferledger_consumer_uncommitted_messages",
            "records a restart would read again: high watermark minus the committed offset",
            labels=labels,
        )
        try:
            rows = self.rows()
        except Exception:  # the consumer between states (a rebalance): nothing this scrape
            rows = []
        for topic, partition, highwater, position, committed in rows:
            key = [self.component, topic, str(partition)]
            if position is not None:
                lag.add_metric(key, max(0, highwater - position))
            if committed is not None:
                uncommitted.add_metric(key, max(0, highwater - committed))
        yield lag
        yield uncommitted


class HealthCollector(Collector):
    """``inferledger_healthy{component}``: 1 while ``/healthz`` would answer 200, else 0, and
    ``inferledger_dependency_up{component, dependency}`` per probed dependency. The probes
    (a connection to Postgres, a metadata request to the broker) run at most every
    ``cache_seconds``, so frequent scrapes cost nothing more."""

    def __init__(self, component: str, health: Any, cache_seconds: float = 5.0) -> None:
        self.component = component
        self.health = health
        self.cache_seconds = cache_seconds
        self._at = float("-inf")
        self._status: dict[str, Any] = {}
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._at >= self.cache_seconds:
                self._status = self.health.status(probe=True)
                self._at = time.monotonic()
            status = self._status
        healthy = GaugeMetricFamily(
            "inferledger_healthy",
            "1 while /healthz answers 200 (every dependency reachable), else 0",
            labels=["component"],
        )
        healthy.add_metric([self.component], 1.0 if status.get("status") == "ok" else 0.0)
        yield healthy
        up = GaugeMetricFamily(
            "inferledger_dependency_up",
            "1 while the processor reaches the dependency (postgres, kafka), else 0",
            labels=["component", "dependency"],
        )
        failing = status.get("failing", {})
        for dependency in sorted(set(getattr(self.health, "_probes", {})) | set(failing)):
            up.add_metric([self.component, dependency], 0.0 if dependency in failing else 1.0)
        yield up


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass


def serve(
    listen: str,
    component: str,
    counters: Mapping[str, int],
    health: Any = None,
    collectors: Iterable[Collector] = (),
) -> WSGIServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` in a background thread (the process's
    lifetime). ``/healthz`` answers 200 ``{"status": "ok"}``, or 503 with the dependencies that
    are failing now (a :class:`services.runtime.health.Health`). ``/metrics`` has the counters,
    the health as gauges, and whatever ``collectors`` the processor adds."""
    from services.runtime.health import HEALTH

    state = HEALTH if health is None else health
    extra = [HealthCollector(component, state), *collectors]
    metrics_app = make_wsgi_app(registry_for(component, counters, extra))

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
