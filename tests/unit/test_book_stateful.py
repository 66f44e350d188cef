"""Hypothesis stateful tests of the Book against an exact model of DESIGN.md section 3.

Rules add requests (new, identical copies, conflicting reuses of an id, zero-length,
multi-bucket, late), rates, bills, advance the watermark, flush, and restart: everything
exported so far (``take_dirty``) goes to a store, a fresh Book restores part of it (the
latest buckets; the others are only remembered, and come back through the loader), and every
accepted event is read again, as Kafka would give the uncommitted messages back. After every
step the ledger (every ``ClosedBucket`` emitted so far) is checked against an independent
computation with :class:`fractions.Fraction` of everything accepted.

Tolerances: the core quantizes each cost piece to 1e-12 (telescoped from the rate's or line's
start) and each request's work in a bucket to 1e-9 work units (half to even, facts.py); the
model does the latter too and compares amounts to a few 1e-12.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.accounting import AccountingSettings, Added, Book, Rate, Request
from services.accounting.model import Bill

S = 1_000_000
W = 60 * S
T0 = 1_704_067_200 * S  # 2024-01-01, a bucket boundary
CFG = AccountingSettings()
RESOURCES = ("n1", "n2")
WEIGHTS = (Fraction(1), Fraction(1, 10), Fraction(4))
NANO = 10**9


def work_nanos(r: Request) -> int:
    p, c, o = r.prompt_tokens, r.cached_prompt_tokens, r.completion_tokens
    u = (WEIGHTS[0] * (p - c) + WEIGHTS[1] * c + WEIGHTS[2] * o) * r.gpu_count
    return int(u * NANO)


def half_even(x: Fraction) -> int:
    return round(x)  # Fraction.__round__ rounds half to even


def work_in(r: Request, b: int) -> Fraction:
    """DESIGN step 3, each request's share rounded to a nano unit as facts.py does."""
    u = work_nanos(r)
    dur = r.end_us - r.start_us
    if dur == 0:
        return Fraction(u, NANO) if b <= r.start_us < b + W else Fraction(0)
    overlap = max(0, min(r.end_us, b + W) - max(r.start_us, b))
    return Fraction(half_even(Fraction(u * overlap, dur)), NANO)


def rate_cost(rates: list[Rate], lo: int, hi: int) -> Fraction:
    """Integral over [lo, hi) of the rate in force (the latest start at or before t)."""
    cuts = sorted({lo, hi, *(r.start_us for r in rates if lo < r.start_us < hi)})
    total = Fraction(0)
    for a, b in zip(cuts, cuts[1:], strict=False):
        live = [r for r in rates if r.start_us <= a and (r.end_us is None or r.end_us > a)]
        if live:
            rate = max(live, key=lambda r: r.start_us)
            total += Fraction(rate.price_per_hour) * (b - a) / (3600 * S)
    return total


def bucket_cost(rates: list[Rate], bills: list[Bill], b: int) -> Fraction:
    """DESIGN step 1: billed lines replace the provisional cost where they cover."""
    total = Fraction(0)
    covered: list[tuple[int, int]] = []
    for x in bills:
        lo, hi = max(x.start_us, b), min(x.end_us, b + W)
        if hi > lo:
            total += Fraction(x.cost) * (hi - lo) / (x.end_us - x.start_us)
            covered.append((lo, hi))
    cursor = b
    for lo, hi in [*sorted(covered), (b + W, b + W)]:
        if lo > cursor:
            total += rate_cost(rates, cursor, lo)
        cursor = max(cursor, hi)
    return total


def busy(reqs: list[Request], b: int) -> Fraction:
    ivs = sorted(
        (max(r.start_us, b), min(r.end_us, b + W))
        for r in reqs
        if min(r.end_us, b + W) > max(r.start_us, b)
    )
    length, end = 0, b
    for lo, hi in ivs:
        if hi > end:
            length += hi - max(lo, end)
            end = hi
    return Fraction(length, W)


def expected(
    reqs: list[Request], rates: list[Rate], bills: list[Bill], b: int
) -> tuple[Fraction, dict[tuple[str, str] | None, Fraction]]:
    """C_b and each (tenant, model) share and the idle entry (key None) of one bucket."""
    cost = bucket_cost(rates, bills, b)
    active = cost * busy(reqs, b)
    work: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    for r in reqs:
        if r.start_us < b + W and (r.end_us > b or b <= r.start_us < b + W):
            work[r.tenant_id, r.model] += work_in(r, b)
    whole = sum(work.values(), Fraction(0))
    if not whole and active:  # busy, no token work at all: by busy time (the core's choice)
        work = {k: busy([r for r in reqs if (r.tenant_id, r.model) == k], b) for k in work}
        whole = sum(work.values(), Fraction(0))
    shares: dict[tuple[str, str] | None, Fraction] = {
        k: (active * w / whole if whole else Fraction(0)) for k, w in work.items()
    }
    shares[None] = cost - sum(shares.values(), Fraction(0))
    return cost, shares


TOL = Fraction(5, 10**12)

times = st.integers(min_value=0, max_value=14 * 60)  # seconds after T0: 14 buckets
tokens = st.integers(min_value=0, max_value=3000)


class BookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.book = self._book()
        self.accepted: dict[str, Request] = {}  # first copies, by id
        self.order: list[str] = []
        self.rates: dict[str, list[Rate]] = defaultdict(list)
        self.bills: dict[str, list[Bill]] = defaultdict(list)
        self.ledger: dict[tuple[str, int], dict[tuple[str, str] | None, Decimal]] = defaultdict(
            lambda: defaultdict(Decimal)
        )
        self.counted: list[tuple[str, str, int]] = []
        self.n = 0

    def _book(self) -> Book:
        def load(resource_id: str, starts: list[int]) -> dict[int, dict[str, Any]]:
            return {
                b: json.loads(json.dumps(self.store[resource_id, "bucket", str(b)]))
                for b in starts
                if (resource_id, "bucket", str(b)) in self.store
            }

        return Book(CFG, load)

    def _take(self, closed: list[Any]) -> None:
        for c in closed:
            for e in c.entries:
                tenant_model = None if e.tenant_id is None else (e.tenant_id, e.model)
                self.ledger[c.resource_id, c.bucket_start_us][tenant_model] += e.amount
            for event_id, status in c.counted:
                self.counted.append((event_id, status, c.bucket_start_us))
        for resource_id, kind, key, data in self.book.take_dirty():
            self.store[resource_id, kind, key] = json.loads(json.dumps(data))

    # -- rules --------------------------------------------------------------------------
    @rule(
        resource=st.sampled_from(RESOURCES),
        tenant=st.sampled_from(("acme", "beta")),
        model=st.sampled_from(("m70", "m8")),
        start=times,
        length=st.one_of(st.just(0), st.integers(0, 50), st.integers(50, 200)),
        sub=st.integers(0, S - 1),
        p=tokens,
        c=tokens,
        o=tokens,
        status=st.sampled_from(("ok", "ok", "error", "cancelled")),
        gpus=st.integers(1, 4),
    )
    def new_request(self, resource, tenant, model, start, length, sub, p, c, o, status, gpus):
        self.n += 1
        t0 = T0 + start * S + sub
        r = Request(
            f"e{self.n}",
            tenant,
            model,
            resource,
            t0,
            t0 + length * S,
            p,
            min(c, p),
            o,
            status,
            gpus,
        )
        added, changes = self.book.add_request(r)
        assert added in (Added.ACCEPTED, Added.LATE), added
        self.accepted[r.event_id] = r
        self.order.append(r.event_id)
        self._take(changes)

    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def identical_copy(self, data):
        r = self.accepted[data.draw(st.sampled_from(self.order))]
        added, changes = self.book.add_request(r)
        assert added is Added.DUPLICATE and changes == []

    @precondition(lambda self: self.accepted)
    @rule(
        data=st.data(),
        field=st.sampled_from(("start_us", "end_us", "tenant_id", "resource_id", "status")),
        shift=st.integers(1, 600),
    )
    def conflicting_copy(self, data, field, shift):
        r = self.accepted[data.draw(st.sampled_from(self.order))]
        if field == "start_us":
            other = r._replace(start_us=r.start_us + shift * S, end_us=r.end_us + shift * S)
        elif field == "end_us":
            other = r._replace(end_us=r.end_us + shift)
        elif field == "tenant_id":
            other = r._replace(tenant_id=r.tenant_id + "x")
        elif field == "resource_id":
            other = r._replace(resource_id="n2" if r.resource_id == "n1" else "n1")
        else:
            other = r._replace(status="error" if r.status == "ok" else "ok")
        assert self.book.add_request(other) == (Added.CONFLICT, [])

    @rule(
        resource=st.sampled_from(RESOURCES),
        start=st.integers(0, 10 * 60),
        price=st.integers(1, 100),
    )
    def rate(self, resource, start, price):
        start_us = T0 + start * S
        if any(x.start_us == start_us for x in self.rates[resource]):
            return  # the model's "latest start wins" needs distinct starts
        r = Rate(resource, start_us, None, Decimal(price), "USD")
        self.rates[resource].append(r)
        self._take(self.book.add_rate(r))

    @rule(
        resource=st.sampled_from(RESOURCES),
        start=st.integers(0, 14 * 60),
        length=st.integers(1, 600),
        cost=st.integers(-5, 50),
    )
    def bill(self, resource, start, length, cost):
        self.n += 1
        x = Bill(
            f"l{self.n}", resource, T0 + start * S, T0 + (start + length) * S, Decimal(cost), "USD"
        )
        self.bills[resource].append(x)
        self._take(self.book.add_bill(x))

    @rule()
    def advance_to_watermark(self):
        self._take(self.book.advance())

    @rule(until=st.integers(0, 16 * 60))
    def advance_to(self, until):
        self._take(self.book.advance(T0 + until * S))

    @rule()
    def flush(self):
        self._take(self.book.flush())

    @rule(keep=st.integers(0, 3))
    def restart(self, keep):
        """Store what is dirty, start a fresh Book: inputs and the ``keep`` latest buckets of
        each resource restored, the older ones only remembered (then loaded when touched);
        every accepted event is read again."""
        self._take([])
        self.book = self._book()
        buckets: dict[str, list[int]] = defaultdict(list)
        for (resource_id, kind, key), data in sorted(self.store.items()):
            if kind == "bucket":
                buckets[resource_id].append(int(key))
            else:
                self.book.restore(resource_id, kind, key, data)
        for resource_id, starts in buckets.items():
            starts.sort()
            old, recent = starts[: len(starts) - keep], starts[len(starts) - keep :]
            if keep == 0:
                old, recent = starts[:-1], starts[-1:]
            for b in old:
                data = self.store[resource_id, "bucket", str(b)]
                self.book.remember(resource_id, str(b), json.loads(json.dumps(data)))
            for b in recent:
                data = self.store[resource_id, "bucket", str(b)]
                self.book.restore(resource_id, "bucket", str(b), json.loads(json.dumps(data)))
            self.book.evicted(resource_id, recent[0])
        for event_id in self.order:
            added, changes = self.book.add_request(self.accepted[event_id])
            assert added in (Added.DUPLICATE, Added.ACCEPTED, Added.LATE), added
            self._take(changes)

    # -- invariants -----------------------------------------------------------------------
    @invariant()
    def ledger_matches_the_exact_model(self):
        for (resource_id, b), entries in self.ledger.items():
            reqs = [r for r in self.accepted.values() if r.resource_id == resource_id]
            cost, shares = expected(reqs, self.rates[resource_id], self.bills[resource_id], b)
            total = sum(entries.values(), Decimal(0))
            assert abs(Fraction(total) - cost) <= TOL, (resource_id, b, total, float(cost))
            for key in set(entries) | set(shares):
                got = Fraction(entries.get(key, Decimal(0)))
                want = shares.get(key, Fraction(0))
                assert abs(got - want) <= 2 * TOL, (resource_id, b, key, got, want)

    @invariant()
    def every_event_is_counted_at_most_once_where_it_finished(self):
        ids = [c[0] for c in self.counted]
        assert len(ids) == len(set(ids))
        for event_id, status, b in self.counted:
            r = self.accepted[event_id]
            assert status == r.status and b == r.end_us - r.end_us % W

    def teardown(self) -> None:
        self._take(self.book.flush())
        self.ledger_matches_the_exact_model()
        counted = {c[0] for c in self.counted}
        assert counted == set(self.accepted), set(self.accepted) ^ counted


BookMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBook = BookMachine.TestCase


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(times, st.integers(0, 200), tokens, tokens, st.sampled_from(RESOURCES)),
        min_size=1,
        max_size=25,
    ),
    st.randoms(use_true_random=False),
)
def test_final_totals_do_not_depend_on_arrival_order_copies_or_conflicts(rows, rnd):
    reqs = [
        Request(f"e{i}", "t", "m", res, T0 + s * S, T0 + (s + n) * S, p, 0, o, "ok")
        for i, (s, n, p, o, res) in enumerate(rows)
    ]

    def run(events: list[Request]) -> dict[tuple[str, int, str | None], Decimal]:
        book = Book(CFG)
        for res in RESOURCES:
            book.add_rate(Rate(res, T0, None, Decimal("36"), "USD"))
        out: dict[tuple[str, int, str | None], Decimal] = defaultdict(Decimal)
        closed = []
        for k, r in enumerate(events):
            closed += book.add_request(r)[1]
            if k % 7 == 6:
                closed += book.advance()
        for c in closed + book.flush():
            for e in c.entries:
                out[c.resource_id, c.bucket_start_us, e.tenant_id] += e.amount
        return {k: v for k, v in out.items() if v}

    shuffled = [*reqs, *rnd.sample(reqs, len(reqs) // 2)]  # with identical copies
    rnd.shuffle(shuffled)
    # conflicting reuses after their first copies (the first copy wins: that is order)
    shuffled += [r._replace(start_us=r.start_us + W, end_us=r.end_us + W) for r in reqs[:2]]
    assert run(shuffled) == run(sorted(reqs, key=lambda r: r.end_us))
