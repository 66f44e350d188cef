"""The accounting core against DESIGN.md section 3, and its invariants as properties."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.accounting import (
    QUANTUM,
    AccountingSettings,
    Book,
    Rate,
    Request,
    allocate_bucket,
    bucket_total,
    largest_remainder,
    provisional_cost,
    to_us,
)

T0 = to_us(datetime(2024, 1, 1, tzinfo=UTC))
S = 1_000_000
CFG = AccountingSettings()


def req(eid, tenant, model, start, end, prompt, cached, completion, status="ok", resource="node-1"):
    return Request(
        eid,
        tenant,
        model,
        resource,
        T0 + start * S,
        T0 + end * S,
        prompt,
        cached,
        completion,
        status,
    )


WORKED = [
    req("r1", "acme", "llama-70b", 0, 20, 1000, 0, 200),
    req("r2", "beta", "llama-70b", 10, 30, 500, 400, 100),
    req("r3", "acme", "llama-8b", 50, 70, 300, 0, 50),
]
RATE = Rate("node-1", T0, None, Decimal("36.00"), "USD")


def amounts(entries):
    return {(e.entry_kind, e.tenant_id, e.model): e.amount for e in entries}


def test_worked_example_first_bucket():
    entries = allocate_bucket("node-1", T0, WORKED, [RATE], CFG)
    assert amounts(entries) == {
        ("usage", "acme", "llama-70b"): Decimal("0.277992277992"),
        ("usage", "beta", "llama-70b"): Decimal("0.083397683398"),
        ("usage", "acme", "llama-8b"): Decimal("0.038610038610"),
        ("idle", None, None): Decimal("0.200000000000"),
    }
    assert bucket_total(entries) == {"USD": Decimal("0.6")}
    by_key = {(e.tenant_id, e.model): e for e in entries}
    assert by_key[("acme", "llama-70b")].completions == 1
    assert by_key[("acme", "llama-8b")].completions == 0  # r3 finishes in the next bucket
    assert by_key[(None, None)].busy_seconds == Decimal("40")
    assert by_key[("acme", "llama-8b")].work_units == Decimal("250")


def test_worked_example_second_bucket():
    entries = allocate_bucket("node-1", T0 + 60 * S, WORKED, [RATE], CFG)
    assert amounts(entries) == {
        ("usage", "acme", "llama-8b"): Decimal("0.100000000000"),
        ("idle", None, None): Decimal("0.500000000000"),
    }
    (usage,) = [e for e in entries if e.entry_kind == "usage"]
    assert usage.completions == 1 and usage.prompt_tokens == 300 and usage.completion_tokens == 50


def test_book_streams_the_worked_example():
    book = Book(CFG)
    book.add_rate(RATE)
    for r in WORKED:
        book.add_request(r)
    assert book.advance() == []  # watermark = 70 s - 120 s: nothing may close yet
    closed = book.flush()
    assert [c.bucket_start_us for c in closed] == [T0, T0 + 60 * S]
    assert sum(e.amount for c in closed for e in c.entries) == Decimal("1.2")


def test_unpriced_traffic_is_recorded_with_zero_amount():
    entries = allocate_bucket("node-1", T0, WORKED, [], CFG)
    assert {e.cost_basis for e in entries} == {"unpriced"}
    assert all(e.amount == 0 for e in entries)
    assert sum(e.completions for e in entries) == 2  # r1 and r2 finish in [0, 60)


def test_idle_resource_with_a_rate_gets_idle_entries_up_to_effective_to():
    book = Book(CFG)
    book.add_rate(Rate("idle-node", T0, T0 + 300 * S, Decimal("7.20"), "USD"))
    closed = book.flush()
    assert len(closed) == 5
    assert all(c.entries[0].entry_kind == "idle" for c in closed)
    assert sum(c.entries[0].amount for c in closed) == Decimal("0.6")


def test_rate_change_inside_a_bucket_is_integrated():
    rates = [
        Rate("node-1", T0, None, Decimal("36"), "USD"),
        Rate("node-1", T0 + 30 * S, None, Decimal("72"), "USD"),
    ]
    entries = allocate_bucket("node-1", T0, [], rates, CFG)
    assert bucket_total(entries) == {"USD": Decimal("0.9")}


def test_largest_remainder_sums_exactly():
    vals = [Decimal(1) / 3] * 3
    assert sum(largest_remainder(vals, Decimal(1))) == Decimal(1)


# -- properties ----------------------------------------------------------------------------
@st.composite
def workloads(draw):
    n = draw(st.integers(min_value=0, max_value=25))
    reqs = []
    for i in range(n):
        start = draw(st.integers(min_value=0, max_value=400 * S))
        dur = draw(st.one_of(st.just(0), st.integers(min_value=1, max_value=150 * S)))
        prompt = draw(st.integers(min_value=0, max_value=5000))
        reqs.append(
            Request(
                f"e{i}",
                draw(st.sampled_from(["a", "b", "c"])),
                draw(st.sampled_from(["m1", "m2"])),
                "node-1",
                T0 + start,
                T0 + start + dur,
                prompt,
                draw(st.integers(min_value=0, max_value=prompt)),
                draw(st.integers(min_value=0, max_value=2000)),
                draw(st.sampled_from(["ok", "ok", "error", "cancelled"])),
                draw(st.integers(min_value=1, max_value=8)),
            )
        )
    price = draw(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=5))
    return reqs, Rate("node-1", T0 - 600 * S, None, price, "USD")


def run_book(reqs, rate):
    book = Book(CFG)
    book.add_rate(rate)
    closed = []
    for r in reqs:
        book.add_request(r)
    closed.extend(book.flush())
    return closed


def totals(closed):
    out: dict[tuple[int, str, str | None, str | None], Decimal] = {}
    for c in closed:
        for e in c.entries:
            key = (c.bucket_start_us, e.entry_kind, e.tenant_id, e.model)
            out[key] = out.get(key, Decimal(0)) + e.amount
    return out


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_each_bucket_sums_exactly_to_its_cost(work):
    reqs, rate = work
    closed = run_book(reqs, rate)
    for c in closed:
        expected = provisional_cost([rate], c.bucket_start_us, c.bucket_start_us + CFG.bucket_us)
        assert bucket_total(c.entries) == expected
        one_bucket = rate.price_per_hour * CFG.bucket_seconds / 3600
        assert abs(expected["USD"] - one_bucket) <= QUANTUM
        assert all(e.amount == e.amount.quantize(QUANTUM) for e in c.entries)
    # and the buckets together are the whole rental, rounded once
    if closed:
        first, last = closed[0].bucket_start_us, closed[-1].bucket_start_us + CFG.bucket_us
        assert [c.bucket_start_us for c in closed] == list(range(first, last, CFG.bucket_us))
        hour = Decimal(3600 * S)
        whole = (rate.price_per_hour * (last - rate.start_us) / hour).quantize(QUANTUM) - (
            rate.price_per_hour * (first - rate.start_us) / hour
        ).quantize(QUANTUM)
        assert sum(e.amount for c in closed for e in c.entries) == whole


@settings(max_examples=100, deadline=None)
@given(workloads(), st.randoms(use_true_random=False))
def test_arrival_order_does_not_matter(work, rnd):
    reqs, rate = work
    shuffled = list(reqs)
    rnd.shuffle(shuffled)
    assert totals(run_book(reqs, rate)) == totals(run_book(shuffled, rate))


@settings(max_examples=100, deadline=None)
@given(workloads(), st.randoms(use_true_random=False))
def test_duplicates_change_nothing(work, rnd):
    reqs, rate = work
    dups = reqs + [rnd.choice(reqs) for _ in range(len(reqs))] if reqs else []
    rnd.shuffle(dups)
    assert totals(run_book(dups, rate)) == totals(run_book(reqs, rate))
    ids = [e.entry_id for c in run_book(dups, rate) for e in c.entries]
    assert len(ids) == len(set(ids))


@settings(max_examples=100, deadline=None)
@given(workloads())
def test_counts_are_counted_once(work):
    reqs, rate = work
    closed = run_book(reqs, rate)
    assert sum(e.completions for c in closed for e in c.entries) == sum(
        r.status == "ok" for r in reqs
    )
    assert sum(e.failed_requests for c in closed for e in c.entries) == sum(
        r.status != "ok" for r in reqs
    )
    assert sum(e.completion_tokens for c in closed for e in c.entries) == sum(
        r.completion_tokens for r in reqs
    )


def test_streaming_close_matches_bounded_flush():
    rnd = random.Random(7)
    reqs = []
    for i in range(300):
        s = rnd.randrange(0, 3600 * S)
        reqs.append(
            Request(
                f"x{i}",
                rnd.choice("ab"),
                "m",
                "node-1",
                T0 + s,
                T0 + s + rnd.randrange(0, 30 * S),
                100,
                0,
                10,
                "ok",
            )
        )
    reqs.sort(key=lambda r: r.end_us)
    book = Book(CFG)
    book.add_rate(RATE)
    streamed = []
    for r in reqs:
        book.add_request(r)
        streamed.extend(book.advance())
    streamed.extend(book.flush())
    assert totals(streamed) == totals(run_book(reqs, RATE))


def test_buckets_without_rate_or_traffic_are_skipped_and_later_ones_still_close():
    book = Book(CFG)
    book.add_rate(Rate("node-1", T0, T0 + 120 * S, Decimal("36"), "USD"))
    book.add_rate(Rate("node-1", T0 + 600 * S, T0 + 660 * S, Decimal("36"), "USD"))
    book.add_request(req("late", "acme", "m", 1000, 1010, 10, 0, 1))
    starts = [(c.bucket_start_us - T0) // S for c in book.flush()]
    assert starts == [0, 60, 600, 960]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(1, 30)), max_size=30))
def test_merged_intervals_cover_exactly_the_union(spans):
    from services.accounting.facts import length, merge_interval

    merged: list[tuple[int, int]] = []
    points: set[int] = set()
    for lo, d in spans:
        merge_interval(merged, lo, lo + d)
        points.update(range(lo, lo + d))
    assert length(merged) == len(points)
    assert all(a < b for a, b in merged)
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(merged, merged[1:], strict=False))
