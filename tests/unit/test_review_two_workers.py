"""Review: the ledger must not depend on how partitions are spread over attribution workers.

Found by a hostile review: a worker whose partitions carry no traffic had no watermark, so a
rated node without traffic on such a worker never closed its idle buckets. Now such a worker
closes as far as the other workers have (``attribution_progress``, through a progress loader;
here the other worker's Book directly). In a bounded run that holds when the other workers
have flushed first; otherwise the audit fails on the missing buckets (docs/operations.md)."""

from __future__ import annotations

import json

from services.attribution.processor import AttributionProcessor, Output
from services.runtime.config import Settings

RATE = {
    "resource_id": "spare",  # a node nobody uses: it costs idle money
    "price_per_hour": "36.00",
    "currency": "USD",
    "effective_from": "2024-01-01T00:00:00Z",
}


def event(event_id: str, minute: int) -> bytes:
    start = f"2024-01-01T00:{minute:02d}:00Z"
    finish = f"2024-01-01T00:{minute:02d}:30Z"
    return json.dumps(
        {
            "event_id": event_id,
            "tenant_id": "acme",
            "resource_id": "busy",
            "model": "m",
            "engine": "vllm",
            "started_at": start,
            "finished_at": finish,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "status": "ok",
        }
    ).encode()


def spare_buckets(out: Output) -> set[str]:
    return {
        json.loads(v)["bucket_start"]
        for r, v in out.allocations
        if r == "spare" and json.loads(v)["entries"]
    }


def test_review_streaming_worker_without_traffic_never_closes_its_idle_buckets():
    """``busy`` traffic is on events partition 0, the ``spare`` node's rate on rates partition
    1 (same hash: its events would be on events partition 1, which stays empty). One worker with
    both partitions closes the spare node's idle buckets as busy's event time advances. Two
    workers (a second one joined the group: 0 -> A, 1 -> B): B never has a watermark
    (``watermark_us`` is None while no assigned partition delivered an event), so the spare
    node's idle cost is never decided, however long B runs."""
    settings = Settings(allowed_lateness_seconds=0, idle_partition_seconds=30)
    now = [1000.0]

    def worker(elsewhere=None) -> AttributionProcessor:
        proc = AttributionProcessor(settings, progress_loader=elsewhere)
        proc.clock = lambda: now[0]
        proc.wall_clock = lambda: 1704067200.0 + 3600
        return proc

    one, a = worker(), worker()
    b = worker(lambda me: a.book.closed_through())
    one.on_rate(json.dumps(RATE).encode(), 1, 0)
    b.on_rate(json.dumps(RATE).encode(), 1, 0)
    for minute in range(10):
        for proc in (one, a):
            proc.on_events(event(f"e{minute}", minute), f"m{minute}", 0, minute)
    closed_one: set[str] = set()
    closed_b: set[str] = set()
    for _ in range(5):
        now[0] += 31  # partition 1 has been silent for longer than idle_partition_seconds
        closed_one |= spare_buckets(one.step({0, 1}, {0, 1}))
        a.step({0}, {0})
        closed_b |= spare_buckets(b.step({1}, {1}))
    assert len(closed_one) == 9  # 00:00 .. 00:08 (the watermark is busy's 00:09:30)
    assert closed_b == closed_one, f"worker B closed {len(closed_b)} of the spare node's buckets"


def test_review_bounded_run_on_two_workers_drops_the_spare_nodes_idle_cost():
    """The same with ``--until-idle``: ``Book.flush`` closes an open-ended rate up to the
    latest event time *this worker's Book* saw (``max_event_us``), None on B: nothing."""
    settings = Settings(allowed_lateness_seconds=0)
    marker = json.dumps({"type": "inferledger.control.end_of_input.v1", "run_id": "r"}).encode()

    def worker(elsewhere=None) -> AttributionProcessor:
        proc = AttributionProcessor(settings, run_id="r", progress_loader=elsewhere)
        proc.wall_clock = lambda: 1704067200.0 + 3600
        return proc

    one, a = worker(), worker()
    b = worker(lambda me: a.book.closed_through())
    one.on_rate(json.dumps(RATE).encode(), 1, 0)
    b.on_rate(json.dumps(RATE).encode(), 1, 0)
    for minute in range(10):
        for proc in (one, a):
            proc.on_events(event(f"e{minute}", minute), f"m{minute}", 0, minute)
    for proc, parts in ((one, {0, 1}), (a, {0}), (b, {1})):
        for p in parts:
            proc.on_events(marker, "mk", p, 100)
            proc.on_rate(marker, p, 100)
            proc.on_billing(marker, p, 100)
    closed_one = spare_buckets(one.step({0, 1}, {0, 1}, {0, 1}))
    a.step({0}, {0}, {0})
    out_b = b.step({1}, {1}, {1})
    assert out_b.finished
    assert len(closed_one) == 10
    assert spare_buckets(out_b) == closed_one, "B finished without the spare node's idle cost"
