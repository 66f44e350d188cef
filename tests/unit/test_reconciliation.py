"""Late events, billing lines and late rates: the ledger converges without rewriting history."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.accounting import AccountingSettings, Added, Book, Rate, Request
from services.accounting.model import Bill
from tests.unit.test_accounting import CFG, RATE, T0, WORKED, S, req


def totals(closed, by=("bucket", "tenant", "model")):
    out: dict = {}
    for c in closed:
        for e in c.entries:
            key = tuple(
                {
                    "bucket": c.bucket_start_us,
                    "tenant": e.tenant_id,
                    "model": e.model,
                    "kind": e.entry_kind,
                }[k]
                for k in by
            )
            amount, completions = out.get(key, (Decimal(0), 0))
            out[key] = (amount + e.amount, completions + e.completions)
    return out


HOUR_BILL = Bill("bill-1", "node-1", T0, T0 + 3600 * S, Decimal("30.00"), "USD")


def test_a_bill_reconciles_every_entry_by_minus_one_sixth():
    book = Book(CFG)
    book.add_rate(Rate("node-1", T0, T0 + 3600 * S, Decimal("36.00"), "USD"))
    for r in WORKED:
        book.add_request(r)
    first = book.flush()
    assert len(first) == 60
    recon = book.add_bill(HOUR_BILL)
    assert len(recon) == 60
    before = {(c.bucket_start_us, e.tenant_id, e.model): e.amount for c in first for e in c.entries}
    for c in recon:
        for e in c.entries:
            assert e.entry_kind == "reconciliation" and e.cost_basis == "billed"
            assert e.billing_line_ids == ("bill-1",)
            old = before[(c.bucket_start_us, e.tenant_id, e.model)]
            assert abs(e.amount + old / 6) <= Decimal("1e-12")
    everything = first + recon
    assert sum(e.amount for c in everything for e in c.entries) == Decimal("30.00")
    for c in totals(everything, ("bucket",)).values():
        assert c[0] == Decimal("0.5")
    # the same line again changes nothing; a credit for the same period reconciles again
    assert book.add_bill(HOUR_BILL) == []
    credit = book.add_bill(Bill("credit-1", "node-1", T0, T0 + 3600 * S, Decimal("-6"), "USD"))
    assert sum(e.amount for c in everything + credit for e in c.entries) == Decimal("24.00")


def test_a_late_event_adjusts_its_closed_bucket_to_the_on_time_allocation():
    on_time = Book(CFG)
    on_time.add_rate(RATE)
    for r in WORKED:
        on_time.add_request(r)
    expected = totals(on_time.flush())

    book = Book(CFG)
    book.add_rate(RATE)
    book.add_request(WORKED[0])
    book.add_request(WORKED[2])
    closed = book.flush()
    status, adjustments = book.add_request(WORKED[1])
    assert status is Added.LATE
    assert {e.entry_kind for c in adjustments for e in c.entries} == {"late_adjustment"}
    assert totals(closed + adjustments) == expected
    assert adjustments[0].counted == [("r2", "ok")]
    assert book.add_request(WORKED[1]) == (Added.DUPLICATE, [])


def test_an_event_beyond_the_horizon_is_too_late():
    cfg = AccountingSettings(late_horizon_seconds=3600)
    book = Book(cfg)
    book.add_rate(RATE)
    book.add_request(WORKED[0])
    book.add_request(req("much-later", "acme", "m", 7300, 7310, 1, 0, 1))
    book.advance()
    status, changes = book.add_request(req("old", "acme", "m", 5, 6, 1, 0, 1))
    assert status is Added.TOO_LATE and changes == []


def test_unpriced_traffic_is_priced_when_a_rate_arrives():
    book = Book(CFG)
    for r in WORKED:
        book.add_request(r)
    first = book.flush()
    assert {e.cost_basis for c in first for e in c.entries} == {"unpriced"}
    priced = book.add_rate(RATE)
    assert {e.cost_basis for c in priced for e in c.entries} == {"provisional"}
    on_time = Book(CFG)
    on_time.add_rate(RATE)
    for r in WORKED:
        on_time.add_request(r)
    assert totals(first + priced) == totals(on_time.flush())


def test_closed_state_survives_export_and_restore():
    book = Book(CFG)
    book.add_rate(RATE)
    book.add_request(WORKED[0])
    closed = book.flush()
    restored = Book(CFG)
    restored.add_rate(RATE)
    for item in book.take_dirty():
        restored.restore(*item)
    status, adjustments = restored.add_request(WORKED[1])
    assert status is Added.LATE
    reference = Book(CFG)
    reference.add_rate(RATE)
    reference.add_request(WORKED[0])
    reference.add_request(WORKED[1])
    assert totals(closed + adjustments) == totals(reference.flush())
    assert restored.add_request(WORKED[0]) == (Added.DUPLICATE, [])


@st.composite
def scenario(draw):
    n = draw(st.integers(min_value=1, max_value=20))
    reqs = []
    for i in range(n):
        start = draw(st.integers(min_value=0, max_value=900 * S))
        dur = draw(st.integers(min_value=0, max_value=90 * S))
        prompt = draw(st.integers(min_value=0, max_value=3000))
        reqs.append(
            Request(
                f"e{i}",
                draw(st.sampled_from("ab")),
                draw(st.sampled_from("xy")),
                "node-1",
                T0 + start,
                T0 + start + dur,
                prompt,
                draw(st.integers(min_value=0, max_value=prompt)),
                draw(st.integers(min_value=0, max_value=500)),
                draw(st.sampled_from(["ok", "error"])),
            )
        )
    bills = [
        Bill(
            f"line-{j}",
            "node-1",
            T0 + j * 300 * S,
            T0 + (j + 1) * 300 * S,
            draw(st.decimals(min_value=-5, max_value=50, places=4)),
            "USD",
        )
        for j in range(draw(st.integers(min_value=0, max_value=4)))
    ]
    rate = Rate("node-1", T0, T0 + 1200 * S, Decimal("36"), "USD")
    items = [("req", r) for r in reqs] + [("bill", b) for b in bills] + [("rate", rate)]
    order = draw(st.permutations(items))
    advance_every = draw(st.integers(min_value=1, max_value=5))
    return reqs, bills, order, advance_every


def feed(order, advance_every, lateness, evict=False):
    """Feed ``order``; with ``evict``, closed buckets leave memory as soon as they may and
    come back through a loader over what ``take_dirty`` exported (JSON, as Postgres holds it)."""
    cfg = AccountingSettings(allowed_lateness_seconds=lateness, resident_seconds=0)
    store: dict[tuple[str, int], str] = {}

    def loader(resource_id, starts):
        return {b: json.loads(store[resource_id, b]) for b in starts if (resource_id, b) in store}

    book = Book(cfg, loader if evict else None)
    closed = []
    for i, (kind, item) in enumerate(order):
        if kind == "req":
            closed += book.add_request(item)[1]
        elif kind == "rate":
            closed += book.add_rate(item)
        else:
            closed += book.add_bill(item)
        if i % advance_every == 0:
            closed += book.advance()
            for resource_id, kind, key, data in book.take_dirty():
                if kind == "bucket":
                    store[resource_id, int(key)] = json.dumps(data)
    return closed + book.flush()


@settings(max_examples=120, deadline=None)
@given(scenario(), st.sampled_from([0, 30, 120]))
def test_any_arrival_order_gives_the_same_final_ledger(sc, lateness):
    reqs, bills, order, advance_every = sc
    rate = [item for item in order if item[0] == "rate"]
    reference = feed(
        rate
        + [("bill", b) for b in bills]
        + sorted([("req", r) for r in reqs], key=lambda x: x[1].end_us),
        10**9,
        10**6,
    )
    got = feed(order, advance_every, lateness)
    assert totals(got) == totals(reference)
    ids = [e.entry_id for c in got for e in c.entries]
    assert len(ids) == len(set(ids))
    for bucket, (amount, _) in totals(got, ("bucket",)).items():
        assert amount == totals(reference, ("bucket",))[bucket][0]


@settings(max_examples=120, deadline=None)
@given(scenario(), st.sampled_from([0, 30, 120]))
def test_evicting_closed_buckets_changes_nothing(sc, lateness):
    """A Book that keeps no closed bucket in memory decides exactly what one keeping all does,
    duplicates included."""
    reqs, _, order, advance_every = sc
    replayed = list(order) + [("req", r) for r in reqs[:3]]  # duplicates after eviction
    kept = feed(replayed, advance_every, lateness)
    evicted = feed(replayed, advance_every, lateness, evict=True)
    assert [(c.resource_id, c.bucket_start_us, c.entries, c.counted) for c in evicted] == [
        (c.resource_id, c.bucket_start_us, c.entries, c.counted) for c in kept
    ]


def test_eviction_bounds_what_stays_in_memory():
    cfg = AccountingSettings(allowed_lateness_seconds=0, resident_seconds=120)
    store: dict[tuple[str, int], dict[str, Any]] = {}
    book = Book(cfg, lambda r, starts: {b: store[r, b] for b in starts if (r, b) in store})
    book.add_rate(Rate("node-1", T0, None, Decimal("36"), "USD"))
    resident = []
    for minute in range(200):
        start = T0 + minute * 60 * S
        book.add_request(
            Request(f"e{minute}", "a", "x", "node-1", start, start + S, 10, 0, 10, "ok")
        )
        book.advance()
        for resource_id, kind, key, data in book.take_dirty():
            if kind == "bucket":
                store[resource_id, int(key)] = data
        resident.append(book.resident_buckets)
    assert max(resident[10:]) <= 4  # the open bucket and the last couple of closed ones
    assert len(store) >= 190
    # an old bucket comes back for a duplicate check and a late event
    status, _ = book.add_request(
        Request("e5", "a", "x", "node-1", T0 + 5 * 60 * S, T0 + 5 * 60 * S + S, 10, 0, 10, "ok")
    )
    assert status is Added.DUPLICATE
    status, changes = book.add_request(
        Request("late", "b", "x", "node-1", T0 + 5 * 60 * S, T0 + 5 * 60 * S + S, 10, 0, 10, "ok")
    )
    assert status is Added.LATE and changes
