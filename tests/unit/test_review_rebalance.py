"""Review: a rebalance must not let two workers decide the same bucket differently."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from services.accounting import Book
from services.attribution.processor import AttributionProcessor, Output
from services.runtime.config import Settings


def event(event_id: str, tenant: str, start: str, finish: str) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "tenant_id": tenant,
            "resource_id": "node-1",
            "model": "m",
            "engine": "vllm",
            "started_at": f"2024-01-01T{start}Z",
            "finished_at": f"2024-01-01T{finish}Z",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "status": "ok",
        }
    ).encode()


RATE = json.dumps(
    {
        "resource_id": "node-1",
        "price_per_hour": "36.00",
        "currency": "USD",
        "effective_from": "2024-01-01T00:00:00Z",
    }
).encode()


class Storage:
    """attribution_state as state.save / load_resources / load_buckets see it."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], dict[str, Any]] = {}

    def save(self, out: Output) -> None:
        for r, kind, key, data in out.state:
            self.rows[r, kind, key] = data

    def load_resources(self, book: Book, resource_ids: list[str]) -> int:
        items = sorted(k for k in self.rows if k[0] in resource_ids)
        for r, kind, key in sorted(items, key=lambda k: k[1] == "bucket"):
            book.restore(r, kind, key, self.rows[r, kind, key])
        return len(items)

    def load_buckets(self, resource_id: str, starts: list[int]) -> dict[int, dict[str, Any]]:
        rows = self.rows
        return {b: rows[k] for b in starts if (k := (resource_id, "bucket", str(b))) in rows}


def test_review_old_owners_queued_output_conflicts_with_the_new_owners_decision():
    """Worker A closes bucket 00:00 of node-1 with acme's request (its Output waits in A's
    publisher queue: app.py puts Outputs on an asyncio.Queue of ``publish_queue`` and publishes
    each one whatever the assignment has become; nothing drains it when partitions are revoked,
    faust's ``stream_wait_empty`` is off, and nothing fences a revoked owner's writes).
    Partition 0 moves to worker B (a second worker joined). B's ``_own`` loads node-1 from
    Postgres before A's publisher stored the Output, so B decides bucket 00:00 again from the
    committed offset, this time with beta's request too (it came after A closed the bucket).
    Then A's queued Output is published and stored.

    Usage and idle entry ids do not depend on the amounts: both decisions carry the same ids
    with different amounts. The ledger keeps whichever copy arrives first
    (ON CONFLICT DO NOTHING), so the bucket no longer sums to its cost, and A's stale state
    overwrites B's in ``attribution_state``."""
    settings = Settings(allowed_lateness_seconds=0)
    storage = Storage()

    def worker() -> AttributionProcessor:
        proc = AttributionProcessor(
            settings, None, storage.load_buckets, storage.load_resources, None
        )
        proc.wall_clock = lambda: 1704067200.0 + 3600
        return proc

    a = worker()
    a.on_rate(RATE, 0, 0)
    a.on_events(event("e1", "acme", "00:00:10", "00:00:20"), "m0", 0, 0)
    a.on_events(event("e2", "acme", "00:02:00", "00:02:05"), "m1", 0, 1)
    queued = a.step({0}, {0})  # A closes 00:00 and 00:01: queued, not yet stored
    assert queued.allocations
    # offset 2: beta's request in 00:00, late for A. The group rebalances: partition 0 -> B.
    late = event("e3", "beta", "00:00:30", "00:00:50")
    a.step(set(), set())  # A hands node-1 over; its queued Output is still to be published
    b = worker()
    b.on_rate(RATE, 0, 0)  # B loads node-1 from storage: A's Output is not stored yet
    for offset, raw in enumerate([event("e1", "acme", "00:00:10", "00:00:20"),
                                  event("e2", "acme", "00:02:00", "00:02:05"), late]):  # fmt: skip
        b.on_events(raw, f"b{offset}", 0, offset)  # from the committed offset (none yet)
    decided_by_b = b.step({0}, {0})
    storage.save(decided_by_b)
    storage.save(queued)  # A's publisher: stored and sent after the handover

    copies: dict[str, set[str]] = defaultdict(set)
    for out in (decided_by_b, queued):
        for _, value in out.allocations:
            for entry in json.loads(value)["entries"]:
                copies[entry["entry_id"]].add(entry["amount"])
    conflicting = {eid: amounts for eid, amounts in copies.items() if len(amounts) > 1}
    assert not conflicting, f"one entry id, different amounts: {conflicting}"
