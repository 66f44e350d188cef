"""The attribution step without faust or Kafka: decode, account, emit, hold and release."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from services.accounting import ClosedBucket, Entry
from services.attribution import encode as p
from services.attribution.encode import allocation_messages, allocation_messages_via_models
from services.attribution.processor import AttributionProcessor
from services.contracts import decode_allocation
from services.runtime.config import Settings

EVENT = {
    "event_id": "e1",
    "tenant_id": "acme",
    "resource_id": "node-1",
    "model": "m",
    "engine": "vllm",
    "started_at": "2024-01-01T00:00:00Z",
    "finished_at": "2024-01-01T00:00:30Z",
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "status": "ok",
}
RATE = {
    "resource_id": "node-1",
    "price_per_hour": "36.00",
    "currency": "USD",
    "effective_from": "2024-01-01T00:00:00Z",
}


def raw(obj) -> bytes:
    return json.dumps(obj).encode()


def allocations(out):
    return [decode_allocation(v) for _, v in out.allocations]


def test_messages_are_held_until_their_buckets_close_then_released():
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0))
    proc.on_rate(raw(RATE), 0, 0)
    proc.on_events(raw(EVENT), "m1", 0, 0)
    out = proc.step({0}, {0})
    assert out.release == [] and out.allocations == []  # watermark 00:30: bucket still open
    assert [k for _, k, _, _ in out.state] == ["rate"]  # stored before anything depends on it
    later = dict(
        EVENT, event_id="e2", started_at="2024-01-01T00:01:00Z", finished_at="2024-01-01T00:01:10Z"
    )
    proc.on_events(raw(later), "m2", 0, 1)
    out = proc.step({0}, {0})
    (alloc,) = allocations(out)
    assert str(sum(e.amount for e in alloc.entries)) == "0.600000000000"
    assert alloc.counted_events == [("e1", "ok")]
    assert out.release == ["m1"]  # m2's bucket is still open
    assert [k for _, k, _, _ in out.state] == ["bucket"]


def test_late_adjustments_and_reconciliations_are_emitted_with_the_closing_buckets():
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0))
    proc.on_events(raw(EVENT), "m1", 0, 0)
    proc.on_events(
        raw(
            dict(
                EVENT,
                event_id="e9",
                started_at="2024-01-01T00:05:00Z",
                finished_at="2024-01-01T00:05:01Z",
            )
        ),
        "m2",
        0,
        1,
    )
    first = allocations(proc.step({0}, {0}))
    assert {e.cost_basis for a in first for e in a.entries} == {"unpriced"}
    proc.on_rate(raw(RATE), 0, 0)  # a rate arrives late: the closed buckets are priced
    proc.on_events(
        raw(
            dict(
                EVENT,
                event_id="e10",
                started_at="2024-01-01T00:06:00Z",
                finished_at="2024-01-01T00:06:01Z",
            )
        ),
        "m3",
        0,
        2,
    )
    out = allocations(proc.step({0}, {0}))
    kinds = {e.entry_kind for a in out for e in a.entries}
    assert "reconciliation" in kinds and ("usage" in kinds or "idle" in kinds)


def test_bad_input_goes_to_the_dead_letter_topic_and_is_released():
    proc = AttributionProcessor(Settings())
    proc.on_events(b"{nope", "bad", 3, 7)
    proc.on_events(raw(dict(EVENT, prompt_tokens=-1)), "bad2", 3, 8)
    out = proc.step({3}, set())
    assert out.release == ["bad", "bad2"]
    reasons = [json.loads(v)["reason"] for _, v in out.dead_letters]
    assert reasons == ["invalid_json", "invalid_event"]
    assert all(t == "inference-events.dlq" for t, _ in out.dead_letters)
    assert proc.counters["dlq.invalid_json"] == 1


def test_a_bounded_run_flushes_only_after_every_input_partition_saw_its_marker():
    proc = AttributionProcessor(Settings(), run_id="run-1")
    proc.on_rate(raw(RATE), 0, 0)
    proc.on_events(raw(EVENT), "m1", 0, 0)
    marker = raw({"type": "inferledger.control.end_of_input.v1", "run_id": "run-1"})
    other = raw({"type": "inferledger.control.end_of_input.v1", "run_id": "old-run"})
    proc.on_events(other, "x", 0, 1)
    proc.on_events(marker, "mk", 0, 2)
    assert not proc.step({0}, {0}, {0}).finished  # rates and billing not drained yet
    proc.on_rate(marker, 0, 1)
    proc.on_billing(marker, 0, 0)
    out = proc.step({0}, {0}, {0})
    assert out.finished and allocations(out) and "m1" in out.release


def test_the_watermark_is_the_slowest_partitions_and_an_idle_one_stops_holding_it():
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0, idle_partition_seconds=30))
    now = [1000.0]
    proc.clock = lambda: now[0]
    proc.on_rate(raw(RATE), 0, 0)
    ahead = dict(
        EVENT, event_id="far", started_at="2024-01-01T00:10:00Z", finished_at="2024-01-01T00:10:01Z"
    )
    proc.on_events(raw(ahead), "a", 0, 0)  # partition 0 consumed far ahead
    proc.on_events(raw(EVENT), "b", 1, 0)  # partition 1 is still at 00:00:30
    assert proc.watermark_us({0, 1}) == proc.watermark.latest(1)
    out = proc.step({0, 1}, {0})
    assert allocations(out) == []  # nothing closes past the slow partition
    now[0] += 31  # partition 1 goes quiet: it no longer holds the others back
    proc.watermark.saw(0, 0)  # partition 0 is not
    assert proc.watermark_us({0, 1}) == proc.watermark.latest(0)
    assert allocations(proc.step({0, 1}, {0}))


def test_a_partition_running_ahead_of_the_slowest_is_paused_until_it_catches_up():
    proc = AttributionProcessor(
        Settings(allowed_lateness_seconds=0, idle_partition_seconds=30, partition_lead_seconds=60)
    )
    now = [1000.0]
    proc.clock = lambda: now[0]

    def at(event_id: str, minute: int) -> bytes:
        start = f"2024-01-01T00:{minute:02d}:00Z"
        return raw(dict(EVENT, event_id=event_id, started_at=start, finished_at=start))

    proc.on_events(at("a", 0), "a", 0, 0)
    proc.on_events(at("b", 1), "b", 1, 0)
    assert proc.ahead({0, 1}) == set()  # within the lead
    proc.on_events(at("c", 5), "c", 1, 1)
    assert proc.ahead({0, 1}) == {1}  # 5 minutes ahead: pause it, never the slowest
    now[0] += 31  # paused, partition 1 gets no events, but it is not idle: still paused
    proc.watermark.saw(0, 0)  # partition 0 still delivers (nothing newer)
    assert proc.ahead({0, 1}) == {1}
    proc.on_events(at("d", 4), "d", 0, 1)  # the slow one catches up
    assert proc.ahead({0, 1}) == set()
    assert AttributionProcessor(Settings(partition_lead_seconds=0)).ahead({0, 1}) == set()


# -- the hand-built allocation encoding is byte for byte the contract model's ---------------
# ids and names as the contract accepts them: no control character (Cc), no surrogate (Cs)
_chars = st.characters(blacklist_categories=("Cc", "Cs"))
_text = st.text(_chars, min_size=1, max_size=12).map(lambda s: s.strip() or "x")
_money = st.decimals(
    allow_nan=False, allow_infinity=False, places=12, min_value=-(10**6), max_value=10**6
)
_us = st.integers(min_value=0, max_value=4_000_000_000_000_000)


@st.composite
def closed_buckets(draw):
    resource = draw(_text)
    start = draw(_us)
    entries = [
        Entry(
            entry_id=draw(
                st.text(_chars, min_size=16, max_size=20).map(lambda s: s.strip().ljust(16, "e"))
            ),
            entry_kind=draw(st.sampled_from(["usage", "idle", "adjustment", "reconciliation"])),
            cost_basis=draw(st.sampled_from(["list", "billed"])),
            tenant_id=draw(st.none() | _text),
            model=draw(st.none() | _text),
            resource_id=resource,
            bucket_start_us=draw(st.sampled_from([start, draw(_us)])),
            bucket_seconds=60,
            amount=draw(_money),
            currency=draw(st.sampled_from(["USD", "EUR"])),
            completions=draw(st.integers(0, 10**6)),
            failed_requests=draw(st.integers(0, 10)),
            prompt_tokens=draw(st.integers(0, 10**9)),
            cached_prompt_tokens=draw(st.integers(0, 10**9)),
            completion_tokens=draw(st.integers(0, 10**9)),
            work_units=draw(_money.map(abs)),
            busy_seconds=draw(st.decimals(min_value=0, max_value=60, places=6)),
            billing_line_ids=tuple(draw(st.lists(_text, max_size=3))),
        )
        for _ in range(draw(st.integers(0, 4)))
    ]
    counted = draw(
        st.lists(st.tuples(_text, st.sampled_from(["ok", "error", "cancelled"])), max_size=12)
    )
    return ClosedBucket(resource, start, entries, counted)


@given(closed_buckets(), st.sampled_from([1, 5000]))
def test_allocation_bytes_equal_the_contract_models(closed, per_message):
    old, p.COUNTED_PER_MESSAGE = p.COUNTED_PER_MESSAGE, per_message
    try:
        assert allocation_messages(closed, 60) == allocation_messages_via_models(closed, 60)
    finally:
        p.COUNTED_PER_MESSAGE = old


def test_prices_and_costs_beyond_the_input_limit_are_refused_where_they_enter():
    """An absurd rate or billing line goes to its dead-letter topic with the reason; it must
    not reach the Book, where its bucket's allocation would be refused by the ledger."""
    proc = AttributionProcessor(Settings())
    proc.on_rate(raw(dict(RATE, price_per_hour="1" + "0" * 20)), 0, 0)
    line = {
        "line_id": "l1",
        "resource_id": "node-1",
        "period_start": "2024-01-01T00:00:00Z",
        "period_end": "2024-01-01T01:00:00Z",
        "cost": "-1" + "0" * 20,
        "currency": "USD",
        "charge_category": "usage",
    }
    proc.on_billing(raw(line), 0, 0)
    out = proc.step({0}, {0}, {0})
    letters = [(t, json.loads(v)) for t, v in out.dead_letters]
    assert [t for t, _ in letters] == ["gpu-rates.dlq", "gpu-billing.dlq"]
    assert "price_per_hour" in letters[0][1]["detail"] and "cost" in letters[1][1]["detail"]
    assert proc.counters["rates"] == 0 and "billing.allocated" not in proc.counters


def test_the_largest_accepted_prices_make_allocations_the_ledger_accepts():
    """At the input limits (a week-long bucket, a rate and overlapping lines just under the
    limit, a reconciliation swinging from one sign to the other), every entry still fits the
    ledger's columns: the contract's own validation is the check."""
    from services.contracts.models import PRICE_LIMIT, LedgerEntry

    top = format(PRICE_LIMIT - 1, "f")
    week = 7 * 86_400
    proc = AttributionProcessor(Settings(bucket_seconds=week, allowed_lateness_seconds=0))
    proc.on_rate(raw(dict(RATE, price_per_hour=top)), 0, 0)
    proc.on_events(raw(EVENT), "m1", 0, 0)
    later = dict(EVENT, event_id="e2", started_at="2024-01-09T00:00:00Z")
    later["finished_at"] = "2024-01-09T00:00:10Z"
    proc.on_events(raw(later), "m2", 0, 1)
    first = allocations(proc.step({0}, {0}, {0}))  # the first week closes at the rate
    for n, sign in enumerate(("-", "-", "")):
        line = {
            "line_id": f"l{n}",
            "resource_id": "node-1",
            "period_start": "2024-01-01T00:00:00Z",
            "period_end": "2024-01-01T00:00:01Z",
            "cost": sign + top,
            "currency": "USD",
            "charge_category": "usage",
        }
        proc.on_billing(raw(line), 0, n)
    entries = [e for a in first + allocations(proc.step({0}, {0}, {0})) for e in a.entries]
    kinds = {e.entry_kind for e in entries}
    assert {"usage", "idle", "reconciliation"} <= kinds, kinds
    for e in entries:  # validated again, with the ledger's limits
        LedgerEntry.model_validate(e.model_dump())
    assert max(abs(e.amount) for e in entries) > PRICE_LIMIT  # the limits were approached


class _Store:
    """What ``state.save`` and ``state.load_resources`` do with Postgres, in memory."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str], dict] = {}

    def save(self, items) -> None:
        for resource_id, kind, key, data in items:
            self.items[resource_id, kind, key] = data

    def load(self, book, resource_ids) -> int:
        order = {"bill": 0, "rate": 0, "bucket": 1}  # inputs before buckets, buckets in order
        found = sorted(
            (k for k in self.items if k[0] in resource_ids),
            key=lambda k: (k[0], order[k[1]], int(k[2]) if k[1] == "bucket" else 0, k[2]),
        )
        for resource_id, kind, key in found:
            book.restore(resource_id, kind, key, self.items[resource_id, kind, key])
        return len(found)


class _Message:
    def __init__(self, partition: int, offset: int) -> None:
        self.partition, self.offset = partition, offset


def _minute_event(node: str, minute: int) -> dict:
    start = f"2024-01-01T00:{minute:02d}:05Z"
    return dict(
        EVENT,
        event_id=f"{node}-{minute}",
        resource_id=node,
        started_at=start,
        finished_at=start.replace(":05Z", ":25Z"),
    )


def test_a_rebalance_hands_resources_over_and_the_ledger_counts_nothing_twice():
    """Worker A owns both partitions, then a rebalance gives partition 1 to worker B. A must
    forget node-2 (else it would close node-2's buckets as idle beside B's usage, with the same
    entry ids, and the ledger would keep whichever came first); B restores node-2 from storage
    and reads on from the committed offset. The ledger equals one worker's."""
    settings = Settings(allowed_lateness_seconds=0)
    nodes = {0: "node-1", 1: "node-2"}
    topic = {k: [raw(_minute_event(n, m)) for m in range(6)] for k, n in nodes.items()}
    rates = {k: raw(dict(RATE, resource_id=n)) for k, n in nodes.items()}
    store = _Store()
    acked: dict[int, set[int]] = {0: set(), 1: set()}
    ledger: dict[str, object] = {}  # entry_id -> entry, the first one kept (ON CONFLICT DO NOTHING)

    def run_step(proc, parts):
        out = proc.step(parts, parts, set())
        store.save(out.state)
        for m in out.release:
            acked[m.partition].add(m.offset)
        decided = [e for a in allocations(out) for e in a.entries]
        for e in decided:
            ledger.setdefault(e.entry_id, e)
        return decided

    a = AttributionProcessor(settings, resource_loader=store.load)
    for part in (0, 1):
        a.on_rate(rates[part], part, 0)
        for m in range(3):
            a.on_events(topic[part][m], _Message(part, m), part, m)
    run_step(a, {0, 1})
    assert acked == {0: {0, 1}, 1: {0, 1}}  # minute 2 is still open: its messages are held

    # the rebalance: A keeps partition 0, B gets partition 1 and reads on from offset 2
    for m in range(3, 6):
        a.on_events(topic[0][m], _Message(0, m), 0, m)
    after = run_step(a, {0})
    assert after and {e.resource_id for e in after} == {"node-1"}
    assert a.counters["resources.handed_over"] == 1
    b = AttributionProcessor(settings, resource_loader=store.load)
    b.on_rate(rates[1], 1, 0)
    assert b.counters["state.restored"] >= 3  # the rate and node-2's two closed buckets
    committed = max(acked[1]) + 1
    for m in range(committed, 6):
        b.on_events(topic[1][m], _Message(1, m), 1, m)
    assert {e.resource_id for e in run_step(b, {1})} == {"node-2"}

    reference = AttributionProcessor(settings)
    for part in (0, 1):
        reference.on_rate(rates[part], part, 0)
        for m in range(6):
            reference.on_events(topic[part][m], _Message(part, m), part, m)
    expected = [e for a in allocations(reference.step({0, 1}, {0, 1}, set())) for e in a.entries]

    def net(entries):
        out: dict[tuple, object] = {}
        for e in entries:
            key = (e.resource_id, e.bucket_start, e.tenant_id, e.model, e.currency)
            out[key] = out.get(key, 0) + e.amount
        return {k: v for k, v in out.items() if v}

    assert net(ledger.values()) == net(expected)
    assert len(expected) == 20  # 5 closed minutes of 2 nodes: usage and idle each


def test_the_cores_entry_names_every_column_of_the_one_definition():
    from dataclasses import fields

    from services.contracts.ledger import LEDGER_ENTRY_COLUMNS

    names = {f.name for f in fields(Entry)}
    # the core keeps bucket_start as microseconds; every other column under its own name
    assert names == {"bucket_start_us"} | (set(LEDGER_ENTRY_COLUMNS) - {"bucket_start"})
