"""A rebalance never lets two workers store two decisions of one bucket (real Postgres).

Worker A decides bucket 00:00 of node-1; its output waits in A's publisher queue. Partition 0
moves to worker B, which claims node-1 when it loads it (``resource_owners``) and decides the
bucket again from the committed offset, with a request A never saw. Found by a hostile review:
both decisions carried the same entry ids with different amounts, and the ledger kept whichever
came first. Now the claim fences A off: A's queued decision is dropped when A stores it, so
only one decision of each bucket is ever stored or published. And when A stores first, B loads
A's decision and the request A never saw becomes a late adjustment."""

from __future__ import annotations

import functools
import json
from collections import defaultdict

import pytest

from services.attribution import state
from services.attribution.processor import AttributionProcessor, Output
from services.ledger.db import make_engine
from services.runtime.config import Settings
from tests.helpers import SAMPLE_EVENT

RATE = json.dumps(
    {
        "resource_id": "node-1",
        "price_per_hour": "36.00",
        "currency": "USD",
        "effective_from": "2024-01-01T00:00:00Z",
    }
).encode()


def event(event_id: str, tenant: str, start: str, finish: str) -> bytes:
    return json.dumps(
        dict(
            SAMPLE_EVENT,
            event_id=event_id,
            tenant_id=tenant,
            started_at=f"2024-01-01T{start}Z",
            finished_at=f"2024-01-01T{finish}Z",
        )
    ).encode()


E1 = event("e1", "acme", "00:00:10", "00:00:20")
E2 = event("e2", "acme", "00:02:00", "00:02:05")
E3 = event("e3", "beta", "00:00:30", "00:00:50")  # after A closed 00:00


def worker(engine, name: str) -> AttributionProcessor:
    proc = AttributionProcessor(
        Settings(allowed_lateness_seconds=0),
        None,
        functools.partial(state.load_buckets, engine),
        functools.partial(state.load_resources, engine, worker_id=name),
        functools.partial(state.pending, engine),
    )
    proc.worker_id = name
    proc.wall_clock = lambda: 1704067200.0 + 3600
    return proc


def store(engine, name: str, out: Output) -> list[tuple[str, bytes]]:
    """What app.publish does: save with fencing, then publish what was not fenced off."""
    _, fenced = state.save(engine, out.state, out.allocations, out.progress, name)
    return [a for a in out.allocations if a[0] not in fenced]


def entry_amounts(published: list[tuple[str, bytes]]) -> dict[str, set[str]]:
    amounts: dict[str, set[str]] = defaultdict(set)
    for _, value in published:
        for entry in json.loads(value)["entries"]:
            amounts[entry["entry_id"]].add(entry["amount"])
    return amounts


def test_a_revoked_owners_queued_decision_is_fenced_off(db_url):
    engine = make_engine(db_url)
    a = worker(engine, "A")
    a.on_rate(RATE, 0, 0)  # A claims node-1
    a.on_events(E1, "m0", 0, 0)
    a.on_events(E2, "m1", 0, 1)
    queued = a.step({0}, {0})  # A closes 00:00 and 00:01: queued, not yet stored
    assert queued.allocations

    b = worker(engine, "B")  # the rebalance gave partition 0 to B
    b.on_rate(RATE, 0, 0)  # B claims node-1: nothing of A's is stored yet
    for offset, raw in enumerate([E1, E2, E3]):
        b.on_events(raw, f"b{offset}", 0, offset)
    published = store(engine, "B", b.step({0}, {0}))
    late = store(engine, "A", queued)  # A's publisher gets to it after the hand-over
    assert late == []  # fenced off: nothing of node-1 from A is stored or published

    conflicting = {k: v for k, v in entry_amounts(published).items() if len(v) > 1}
    assert not conflicting
    stored = state.load_buckets(engine, "node-1", [1704067200 * 1_000_000])
    tenants = {p[0] for p in stored[1704067200 * 1_000_000]["positions"]}
    assert tenants == {"acme", "beta", None}  # B's decision, with beta's request
    engine.dispose()


def test_when_the_old_owner_stores_first_the_new_one_builds_on_its_decision(db_url):
    engine = make_engine(db_url)
    a = worker(engine, "A")
    a.on_rate(RATE, 0, 0)
    a.on_events(E1, "m0", 0, 0)
    a.on_events(E2, "m1", 0, 1)
    published = store(engine, "A", a.step({0}, {0}))  # stored before the rebalance

    b = worker(engine, "B")
    b.on_rate(RATE, 0, 0)  # B claims node-1 and loads A's decision
    for offset, raw in enumerate([E1, E2, E3]):
        b.on_events(raw, f"b{offset}", 0, offset)
    published += store(engine, "B", b.step({0}, {0}))

    amounts = entry_amounts(published)
    assert not {k: v for k, v in amounts.items() if len(v) > 1}
    kinds = {
        json.loads(v)["entries"][0]["entry_kind"] for _, v in published if json.loads(v)["entries"]
    }
    assert "late_adjustment" in kinds  # beta's request, after A's close of 00:00
    engine.dispose()


def test_a_finished_output_whose_decisions_were_fenced_off_does_not_claim_their_partition(
    db_url,
):
    """A bounded run with two workers: A reads partitions 0 and 1 to the run's end markers and
    flushes; its finished output (end markers covering {0, 1}) waits in the publisher queue.
    Partition 0 moves to B, which claims node-1. A's save is fenced off for node-1, so A's
    decisions of partition 0 are dropped: if A's end markers still named partition 0, the
    ledger writer would count it as accounted for and finish before B's decisions of it are
    written (and `run all` then stops B). Found by a hostile review."""
    from services.attribution.app import drop_fenced

    run = "run-1"
    marker = json.dumps({"type": "inferledger.control.end_of_input.v1", "run_id": run}).encode()
    engine = make_engine(db_url)

    def bounded(name: str) -> AttributionProcessor:
        proc = AttributionProcessor(
            Settings(allowed_lateness_seconds=0),
            run,
            functools.partial(state.load_buckets, engine),
            functools.partial(state.load_resources, engine, worker_id=name),
            functools.partial(state.pending, engine),
            worker_id=name,
        )
        proc.wall_clock = lambda: 1704067200.0 + 3600
        for p in (0, 1):
            proc.on_rate(marker, p, 100)
            proc.on_billing(marker, p, 100)
        return proc

    node2 = json.dumps(dict(json.loads(RATE), resource_id="node-2")).encode()
    a = bounded("A")
    a.on_rate(RATE, 0, 0)  # A claims node-1 (partition 0) and node-2 (partition 1)
    a.on_rate(node2, 1, 0)
    a.on_events(E1, "m0", 0, 0)
    a.on_events(marker, "k0", 0, 1)
    a.on_events(event("e9", "acme", "00:00:10", "00:00:20").replace(b"node-1", b"node-2"),
                "m1", 1, 0)  # fmt: skip
    a.on_events(marker, "k1", 1, 1)
    queued = a.step({0, 1}, {0, 1}, {0, 1})
    assert queued.finished and queued.covers == {0, 1}

    b = bounded("B")  # the rebalance gave partition 0 to B
    b.on_rate(RATE, 0, 0)  # B claims node-1 before A's publisher stores A's output
    _, fenced = state.save(engine, queued.state, queued.allocations, queued.progress, "A")
    assert fenced == {"node-1"}
    drop_fenced(queued, fenced)
    assert {r for r, _ in queued.allocations} == {"node-2"}
    assert not queued.finished  # no end markers naming partition 0 from A
    out = a.step({1}, {0, 1}, {0, 1})  # A's next step, with the partition it still has
    assert out.finished and out.covers == {1}
    engine.dispose()


@pytest.mark.xfail(
    strict=True,
    reason="open defect: the fence is by worker id, so a worker that lost a resource and "
    "claimed it back passes its own fence with an output queued before the loss",
)
def test_a_queued_decision_of_a_worker_that_lost_and_regained_the_partition_is_fenced(db_url):
    """Found by a hostile review: A's output waits in its publisher queue (Postgres slow);
    partition 0 goes to B (a second worker joins), B decides the bucket with a request A never
    saw and stores it; B leaves and A gets partition 0 back and claims node-1 again. A's queued
    output is then stored and published: the same entry ids with other amounts."""
    engine = make_engine(db_url)
    a = worker(engine, "A")
    a.on_rate(RATE, 0, 0)
    a.on_events(E1, "m0", 0, 0)
    a.on_events(E2, "m1", 0, 1)
    queued = a.step({0}, {0})
    b = worker(engine, "B")
    b.on_rate(RATE, 0, 0)
    for offset, raw in enumerate([E1, E2, E3]):
        b.on_events(raw, f"b{offset}", 0, offset)
    published = store(engine, "B", b.step({0}, {0}))
    a.step(set(), {0})  # A sees the loss
    a.step({0}, {0})  # and gets partition 0 back
    a.on_rate(RATE, 0, 0)  # A claims node-1 again, loading B's decision
    published += store(engine, "A", queued)
    assert not {k: v for k, v in entry_amounts(published).items() if len(v) > 1}
    engine.dispose()
