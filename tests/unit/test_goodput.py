"""Goodput and waste in the pure core (issue 18, part 2): the class of a request, the exact
split of each entry's amount over the classes, and the counts."""

from __future__ import annotations

import json
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
    Slo,
    allocate_bucket,
    to_us,
)
from services.accounting.shares import Position, class_amounts
from services.accounting.slo import (
    CANCELLED,
    FAILED,
    SLO_MISS,
    WITHIN,
    request_class,
    slo_class,
    within,
)

T0 = to_us(datetime(2024, 1, 1, tzinfo=UTC))
S = 1_000_000
Z = Decimal(0)
RATE = Rate("node-1", T0, None, Decimal("36.00"), "USD")
SLOS = {"llama-70b": Slo(ttft_us=2 * S, tpot_us=S // 10)}
CFG = AccountingSettings(slos=SLOS)


def req(eid, tenant, start, end, prompt, completion, status="ok", first=None, model="llama-70b"):
    return Request(
        eid, tenant, model, "node-1", T0 + start * S, T0 + end * S, prompt, 0, completion,
        status, 1, None if first is None else T0 + first * S,
    )  # fmt: skip


# -- the class of a request ----------------------------------------------------------------
def test_time_to_first_token_and_time_per_output_token_at_their_limits():
    slo = Slo(ttft_us=2 * S, tpot_us=S // 10)
    assert within(slo, req("a", "t", 0, 12, 1, 101, first=2))  # ttft 2, tpot 10 s / 100 = 0.1
    assert not within(slo, req("a", "t", 0, 12, 1, 100, first=2))  # 10 s / 99 > 0.1
    assert not within(slo, req("a", "t", 0, 3, 1, 1, first=3))  # ttft 3 > 2


def test_classes_and_the_documented_decisions():
    slo = Slo(ttft_us=2 * S, tpot_us=S // 10)
    assert within(slo, req("a", "t", 0, 1, 1, 1, first=1))  # ttft 1, decode 0
    assert not within(slo, req("a", "t", 0, 2, 1, 1, first=1))  # decode 1 s for 1 token
    # no first_token_at: TTFT is bounded by the whole request (conservative), TPOT not judged
    assert within(slo, req("a", "t", 0, 2, 1, 500))
    assert not within(slo, req("a", "t", 0, 3, 1, 500))
    # no objective for the model (and no "*"): every ok request is within
    assert request_class(req("a", "t", 0, 900, 1, 1, model="other"), SLOS) == WITHIN
    # "*" is the default of other models
    assert request_class(req("a", "t", 0, 900, 1, 1, model="other"), SLOS, slo) == SLO_MISS
    assert request_class(req("a", "t", 0, 1, 1, 1, "error"), SLOS) == FAILED
    assert request_class(req("a", "t", 0, 1, 1, 1, "cancelled"), SLOS) == CANCELLED
    # only the limits given are checked
    assert within(Slo(tpot_us=S), req("a", "t", 0, 60, 1, 100, first=50))
    assert not within(Slo(ttft_us=S), req("a", "t", 0, 60, 1, 100, first=50))


# -- a seeded scenario, by hand ------------------------------------------------------------
SCENARIO = [
    # fast: ttft 1 s, 9 s for 100 more tokens (0.09 s each); work 100 + 4 * 101 = 504
    req("fast", "acme", 0, 10, 100, 101, first=1),
    # slow: ttft 5 s > 2 s; work 100 + 4 * 24 = 196
    req("slow", "acme", 10, 20, 100, 24, first=15),
    # failed: work 200
    req("failed", "acme", 20, 30, 200, 0, "error"),
    # cancelled: work 100 + 4 * 25 = 200
    req("cancelled", "acme", 30, 40, 100, 25, "cancelled", first=31),
]


def test_seeded_scenario_by_hand():
    """Rate 36 USD/h: C = 0.60; busy 40 s of 60: usage 0.40, idle 0.20. Work 1100: within
    0.4 * 504 / 1100 = 0.183272727272|72.., outside 0.4 * 196 / 1100 = 0.071272727272|72..,
    failed and cancelled 0.4 * 200 / 1100 = 0.072727272727|27..; the floors leave 2 units of
    1e-12 for the two largest remainders (within and outside)."""
    (usage, idle) = allocate_bucket("node-1", T0, SCENARIO, [RATE], CFG)
    assert (usage.tenant_id, usage.amount, idle.amount) == ("acme", Decimal("0.4"), Decimal("0.2"))
    assert usage.slo_miss_amount == Decimal("0.071272727273")
    assert usage.failed_amount == Decimal("0.072727272727")
    assert usage.cancelled_amount == Decimal("0.072727272727")
    within_amount = usage.amount - usage.slo_miss_amount - usage.failed_amount
    assert within_amount - usage.cancelled_amount == Decimal("0.183272727273")
    assert (usage.completions, usage.completions_within_slo) == (2, 1)
    assert (usage.failed_requests, usage.cancelled_requests) == (2, 1)
    assert (idle.slo_miss_amount, idle.failed_amount, idle.cancelled_amount) == (Z, Z, Z)
    assert (idle.completions_within_slo, idle.cancelled_requests) == (0, 0)
    # without objectives the ok requests are all within
    (usage, _) = allocate_bucket("node-1", T0, SCENARIO, [RATE], AccountingSettings())
    assert (usage.completions_within_slo, usage.slo_miss_amount) == (2, Z)
    assert usage.failed_amount == Decimal("0.072727272727")


def test_worked_example_without_objectives_is_all_goodput():
    worked = [
        req("r1", "acme", 0, 20, 1000, 200),
        req("r2", "beta", 10, 30, 500, 100),
        req("r3", "acme", 50, 70, 300, 50, model="llama-8b"),
    ]
    for b in (T0, T0 + 60 * S):
        for e in allocate_bucket("node-1", b, worked, [RATE], AccountingSettings()):
            assert e.completions_within_slo == e.completions
            assert (e.slo_miss_amount, e.failed_amount, e.cancelled_amount) == (Z, Z, Z)


def test_class_amounts_add_up_exactly():
    assert class_amounts(Decimal("0.4"), [504, 196, 200, 200]) == [
        Decimal("0.183272727273"), Decimal("0.071272727273"),
        Decimal("0.072727272727"), Decimal("0.072727272727"),
    ]  # fmt: skip
    assert sum(class_amounts(Decimal("-0.000000000001"), [1, 1, 1, 0])) == Decimal("-1e-12")
    assert class_amounts(Decimal("1"), [0, 0, 0, 0]) == [Decimal(1), 0, 0, 0]


# -- properties ----------------------------------------------------------------------------
STATUSES = st.sampled_from(["ok", "ok", "ok", "error", "cancelled"])


@st.composite
def workloads(draw):
    n = draw(st.integers(0, 14))
    reqs = []
    for i in range(n):
        start = draw(st.integers(0, 200 * S))
        dur = draw(st.integers(0, 40 * S))
        first = draw(st.one_of(st.none(), st.integers(0, dur)))
        reqs.append(
            Request(
                f"e{i}",
                draw(st.sampled_from(["acme", "beta"])),
                draw(st.sampled_from(["llama-70b", "llama-8b"])),
                "node-1",
                T0 + start,
                T0 + start + dur,
                draw(st.integers(0, 3000)),
                0,
                draw(st.integers(0, 800)),
                draw(STATUSES),
                draw(st.integers(1, 4)),
                None if first is None else T0 + start + first,
            )
        )
    price = draw(st.decimals(Decimal("-5"), Decimal("90"), places=4))
    return reqs, Rate("node-1", T0, None, price, "USD")


FIELDS = (
    "amount", "slo_miss_amount", "failed_amount", "cancelled_amount",
    "completions", "completions_within_slo", "failed_requests", "cancelled_requests",
)  # fmt: skip


def run(reqs, rate, cfg=CFG):
    book = Book(cfg)
    book.add_rate(rate)
    closed = []
    for r in reqs:
        closed.extend(book.add_request(r)[1])
        closed.extend(book.advance())
    closed.extend(book.flush())
    return closed


def positions(closed):
    """What the ledger holds per (bucket, tenant, model): the sums of its entries' fields."""
    out: dict[tuple, list] = {}
    for c in closed:
        for e in c.entries:
            key = (e.bucket_start_us, e.tenant_id, e.model)
            acc = out.setdefault(key, [0] * len(FIELDS))
            for i, f in enumerate(FIELDS):
                acc[i] += getattr(e, f)
    return {k: tuple(v) for k, v in out.items() if any(v)}


@settings(max_examples=120, deadline=None)
@given(workloads())
def test_class_shares_sum_exactly_to_the_entry_amount(work):
    reqs, rate = work
    for c in run(reqs, rate):
        for e in c.entries:
            parts = (e.slo_miss_amount, e.failed_amount, e.cancelled_amount)
            inside = e.amount - sum(parts)
            assert all(p == p.quantize(QUANTUM) for p in parts)
            if e.entry_kind == "usage":  # (an adjustment carries differences, of any sign)
                # each part lies between 0 and the amount (on the amount's side of 0)
                for p in (*parts, inside):
                    assert (0 <= p <= e.amount) or (e.amount <= p <= 0), (e, p)
                assert 0 <= e.completions_within_slo <= e.completions
                assert 0 <= e.cancelled_requests <= e.failed_requests
            if e.tenant_id is None:
                assert parts == (Z, Z, Z)


@settings(max_examples=120, deadline=None)
@given(workloads())
def test_a_class_without_requests_costs_nothing_and_counts_are_once(work):
    reqs, rate = work
    closed = run(reqs, rate)
    entries = [e for c in closed for e in c.entries]
    ok_within = sum(r.status == "ok" and request_class(r, SLOS) == WITHIN for r in reqs)
    assert sum(e.completions_within_slo for e in entries) == ok_within
    assert sum(e.cancelled_requests for e in entries) == sum(r.status == "cancelled" for r in reqs)
    for key in {(e.tenant_id, e.model) for e in entries if e.tenant_id}:
        mine = [r for r in reqs if (r.tenant_id, r.model) == key]
        if not any(r.status == "cancelled" for r in mine):
            assert all(e.cancelled_amount == 0 for e in entries if (e.tenant_id, e.model) == key)
        if not any(r.status == "error" for r in mine):
            assert all(e.failed_amount == 0 for e in entries if (e.tenant_id, e.model) == key)


@settings(max_examples=100, deadline=None)
@given(workloads(), st.randoms(use_true_random=False))
def test_order_independence_and_duplicates_change_nothing(work, rnd):
    reqs, rate = work
    base = positions(run(reqs, rate))
    shuffled = list(reqs)
    rnd.shuffle(shuffled)
    assert positions(run(shuffled, rate)) == base
    dups = reqs + [rnd.choice(reqs) for _ in range(len(reqs))] if reqs else []
    rnd.shuffle(dups)
    assert positions(run(dups, rate)) == base


@settings(max_examples=80, deadline=None)
@given(workloads(), st.randoms(use_true_random=False))
def test_late_events_adjust_to_the_exact_classes(work, rnd):
    """With no allowed lateness, a shuffled stream makes late events: the adjustment entries
    carry the class differences, and the ledger ends where the whole bucket computed at once
    would be."""
    reqs, rate = work
    cfg = AccountingSettings(allowed_lateness_seconds=0, slos=SLOS)
    shuffled = list(reqs)
    rnd.shuffle(shuffled)
    book = Book(cfg)
    book.add_rate(rate)
    closed = []
    for r in shuffled:
        closed.extend(book.add_request(r)[1])
        closed.extend(book.advance())
    closed.extend(book.flush())
    got = positions(closed)
    want = positions(run(reqs, rate, cfg))
    assert got == want
    for amount, *parts in (v[:4] for v in got.values()):  # the ledger's sums: exact parts
        inside = amount - sum(parts)
        for p in (*parts, inside):
            assert (0 <= p <= amount) or (amount <= p <= 0)


# -- persistence and the wire --------------------------------------------------------------
def test_positions_stored_before_classes_load_as_their_ledger_rows():
    old = ["0.5", 2, 1, 10, 0, 5, "3.000000", "1.000000"]
    p = Position.from_data(old)
    assert (p.within, p.cancelled, p.slo_miss_amount) == (0, 0, Z)
    assert Position.from_data(p.to_data()) == p
    q = Position(Decimal("0.4"), 2, 2, 1, 1, 1, Decimal(1), Decimal(1), 1, 1,
                 Decimal("0.1"), Decimal("0.05"), Decimal("0.02"))  # fmt: skip
    assert Position.from_data(json.loads(json.dumps(q.to_data()))) == q


def test_allocation_messages_without_the_new_fields_decode_as_zero():
    import msgspec

    from services.contracts import LedgerEntry
    from services.contracts.fast import EntryRecord

    old = {
        "entry_id": "0123456789abcdef0123", "entry_kind": "usage", "cost_basis": "provisional",
        "tenant_id": "acme", "model": "m", "resource_id": "node-1",
        "bucket_start": "2024-01-01T00:00:00Z", "bucket_seconds": 60, "completions": 3,
        "amount": "0.5", "currency": "USD",
    }  # fmt: skip
    e = LedgerEntry.model_validate(old)
    assert (e.completions_within_slo, e.cancelled_requests) == (0, 0)
    assert (e.slo_miss_amount, e.failed_amount, e.cancelled_amount) == (Z, Z, Z)
    r = msgspec.json.decode(json.dumps(old), type=EntryRecord)
    assert (r.completions_within_slo, r.cancelled_requests, r.slo_miss_amount) == (0, 0, "0")


def test_slos_setting():
    from services.attribution.settings import accounting_settings
    from services.runtime.config import Settings

    s = Settings(
        slos=json.dumps(
            {"llama-70b": {"ttft_seconds": 2, "tpot_seconds": 0.1}, "*": {"ttft_seconds": 5}}
        )
    )
    acc = accounting_settings(s)
    assert acc.slos == {"llama-70b": Slo(2 * S, S // 10), "*": Slo(5 * S, None)}
    assert slo_class(acc, req("a", "t", 0, 6, 1, 1, model="x")) == SLO_MISS
    import pytest

    with pytest.raises(ValueError):
        Settings(slos='{"m": {"ttft": 2}}')


# -- the demo's service-time model: a hot node queues --------------------------------------
def test_a_hot_node_queues_and_misses_its_objective():
    from services.ingest.trace.fleet import Fleet, default_fleet, replay

    d = default_fleet()
    hot = replay(Fleet.from_dict(d), limit=3000)
    for n in d["nodes"]:
        n.pop("max_running")
    free = replay(Fleet.from_dict(d), limit=3000)
    assert [e.event_id for e in hot] == [e.event_id for e in free]
    waits = [
        ((h.first_token_at or h.finished_at) - (f.first_token_at or f.finished_at)).total_seconds()
        for h, f in zip(hot, free, strict=True)
    ]
    assert min(waits) == 0 and max(waits) > 0.5  # some requests waited for a batch slot
    assert all(
        h.started_at == f.started_at for h, f in zip(hot, free, strict=True)
    )  # arrival unchanged
    slo = {"*": {"ttft_seconds": 1.0, "tpot_seconds": 0.05}}
    assert Fleet.from_dict(default_fleet()).slos == slo
    acc = AccountingSettings(slos={"*": Slo(S, S // 20)})
    from services.attribution.encode import to_request

    missed_hot = sum(slo_class(acc, to_request(e)) == SLO_MISS for e in hot)
    missed_free = sum(slo_class(acc, to_request(e)) == SLO_MISS for e in free)
    assert missed_hot > missed_free
