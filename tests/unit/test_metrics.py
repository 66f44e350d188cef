"""The /metrics families computed at scrape time: a lock-free histogram, consumer lag from the
aiokafka consumer's bookkeeping, health as gauges, and the attribution processor's watermarks
and closed buckets. (tests/e2e/test_pipeline_metrics.py scrapes them from a real run.)"""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

from aiokafka import TopicPartition
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.attribution.app import families
from services.attribution.processor import AttributionProcessor
from services.ledger.writer import LATENCY_BOUNDS, LedgerDecoder
from services.runtime.config import Settings
from services.runtime.health import Health
from services.runtime.metrics import (
    ConsumerLagCollector,
    GaugesCollector,
    HealthCollector,
    Histogram,
    HistogramCollector,
    registry_for,
)


def samples(*collectors) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = registry_for("test", Counter(), collectors)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_the_histogram_counts_each_value_in_its_bucket_and_exposes_them_cumulatively():
    h = Histogram([1, 10, 100])
    for v in (0.5, 1, 5, 50, 500, 1000):
        h.observe(v)
    got = samples(HistogramCollector("x_seconds", "doc", "ledger", "decision", {"close": h}))
    le = {dict(k[1])["le"]: v for k, v in got.items() if k[0] == "x_seconds_bucket"}
    assert le == {"1.0": 2, "10.0": 3, "100.0": 4, "+Inf": 6}  # le is inclusive
    key = (("component", "ledger"), ("decision", "close"))
    assert got["x_seconds_count", key] == 6 and got["x_seconds_sum", key] == 1556.5


def fake_consumer(states: dict[TopicPartition, tuple[int | None, int | None]]):
    def state(highwater, position):
        return SimpleNamespace(
            highwater=highwater, has_valid_position=position is not None, position=position
        )

    assignment = SimpleNamespace(tps=frozenset(states), state_value=lambda tp: state(*states[tp]))
    return SimpleNamespace(_subscription=SimpleNamespace(subscription=SimpleNamespace(
        assignment=assignment)))  # fmt: skip


def test_consumer_lag_is_the_high_watermark_minus_position_and_minus_the_committed_offset():
    consumer = fake_consumer(
        {
            TopicPartition("events", 0): (100, 90),
            TopicPartition("events", 1): (50, None),  # no position yet
            TopicPartition("rates", 0): (None, 0),  # nothing fetched yet: no high watermark
        }
    )
    committed = {("events", 0): 70, ("events", 1): 50}
    got = samples(ConsumerLagCollector("attribution", lambda: consumer, committed))

    def key(topic, partition):
        return (("component", "attribution"), ("partition", partition), ("topic", topic))

    assert got["inferledger_consumer_lag_messages", key("events", "0")] == 10
    assert ("inferledger_consumer_lag_messages", key("events", "1")) not in got
    assert got["inferledger_consumer_uncommitted_messages", key("events", "0")] == 30
    assert got["inferledger_consumer_uncommitted_messages", key("events", "1")] == 0
    assert not any(k[0].startswith("inferledger_consumer") and ("topic", "rates") in k[1]
                   for k in got)  # fmt: skip
    # no consumer yet (before the app started), or one between states: empty, never an error
    assert not any(k[0].startswith("inferledger_consumer") for k in samples(
        ConsumerLagCollector("x", lambda: None, {})))  # fmt: skip
    broken = SimpleNamespace(_subscription=None)
    assert samples(ConsumerLagCollector("x", lambda: broken, {})) is not None


def test_health_gauges_follow_the_probes_and_are_cached_between_scrapes():
    up = [True]
    calls = [0]

    def probe() -> None:
        calls[0] += 1
        if not up[0]:
            raise ConnectionRefusedError("gone")

    health = Health()
    health.add_probe("postgres", probe)
    collector = HealthCollector("ledger", health, cache_seconds=0)
    got = samples(collector)
    assert got["inferledger_healthy", (("component", "ledger"),)] == 1
    key = (("component", "ledger"), ("dependency", "postgres"))
    assert got["inferledger_dependency_up", key] == 1
    up[0] = False
    got = samples(collector)
    assert got["inferledger_healthy", (("component", "ledger"),)] == 0
    assert got["inferledger_dependency_up", key] == 0
    cached = HealthCollector("ledger", health, cache_seconds=60)
    before = calls[0]
    samples(cached)
    samples(cached)
    assert calls[0] == before + 1


def test_a_failing_read_yields_nothing_instead_of_failing_the_scrape():
    def read():
        raise RuntimeError("dictionary changed size during iteration")

    assert not any(k[0].startswith("x_") for k in samples(GaugesCollector(read)))


EVENT = {
    "event_id": "e1", "tenant_id": "acme", "resource_id": "node-1", "model": "m",
    "engine": "vllm", "started_at": "2024-01-01T00:00:00Z",
    "finished_at": "2024-01-01T00:00:30Z", "prompt_tokens": 10, "completion_tokens": 5,
    "status": "ok",
}  # fmt: skip
RATE = {"resource_id": "node-1", "price_per_hour": "36.00", "currency": "USD",
        "effective_from": "2024-01-01T00:00:00Z"}  # fmt: skip


def test_attribution_exports_watermarks_per_partition_and_closed_buckets_by_decision():
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0))
    proc.on_rate(json.dumps(RATE).encode(), 0, 0)
    proc.on_events(json.dumps(EVENT).encode(), "m1", 0, 0)
    later = dict(EVENT, event_id="e2", started_at="2024-01-01T00:01:00Z",
                 finished_at="2024-01-01T00:01:10Z")  # fmt: skip
    proc.on_events(json.dumps(later).encode(), "m2", 0, 1)
    proc.step({0}, {0})
    late = dict(EVENT, event_id="e3", finished_at="2024-01-01T00:00:40Z")  # its bucket closed
    proc.on_events(json.dumps(late).encode(), "m3", 0, 2)
    proc.step({0}, {0})
    got = families(proc)
    (mark,) = got["inferledger_watermark_seconds"][3]
    assert mark == (("attribution", proc.events_topic, "0"), 1704067270.0)  # 00:01:10
    assert got["inferledger_closed_through_seconds"][3] == [(("attribution",), 1704067260.0)]
    closed = dict(got["inferledger_buckets_closed"][3])
    assert closed == {("attribution", "close"): 1.0, ("attribution", "adjustment"): 1.0}


def test_the_writer_notes_each_allocations_bucket_end_and_whether_it_is_a_first_decision():
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0))
    proc.on_rate(json.dumps(RATE).encode(), 0, 0)
    proc.on_events(json.dumps(EVENT).encode(), "m1", 0, 0)
    proc.on_events(json.dumps(dict(EVENT, event_id="e2", started_at="2024-01-01T00:01:00Z",
                   finished_at="2024-01-01T00:01:10Z")).encode(), "m2", 0, 1)  # fmt: skip
    first = proc.step({0}, {0}).allocations
    proc.on_events(json.dumps(dict(EVENT, event_id="e3")).encode(), "m3", 0, 2)
    later = proc.step({0}, {0}).allocations
    settings = Settings()
    topic = settings.topic("cost-allocations")
    messages: list[tuple[str, int, int, bytes | None]] = [
        (topic, 0, n, v) for n, (_, v) in enumerate(first + later)
    ]
    batch = LedgerDecoder(settings).decode(messages)
    assert batch.bucket_ends == [(1704067260.0, True), (1704067260.0, False)]
    assert tuple(sorted(LATENCY_BOUNDS)) == LATENCY_BOUNDS
