"""The allocation arithmetic of DESIGN.md section 3, steps 1 to 6, for one resource and bucket."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any

from services.accounting.facts import BucketFacts, GroupKey, from_nanos, length, to_nanos
from services.accounting.model import (
    US_PER_SECOND,
    AccountingSettings,
    Bill,
    Entry,
    Rate,
    Request,
    TokenWeights,
)

QUANTUM = Decimal("1e-12")
"""Amounts are quantized to 1e-12 of their currency."""
_SECONDS_QUANTUM = Decimal("1e-6")
_WORK_QUANTUM = Decimal("1e-6")
_US_PER_HOUR = Decimal(3600 * US_PER_SECOND)
_CONTEXT = Context(prec=60)


def bucket_floor(t_us: int, bucket_us: int) -> int:
    return (t_us // bucket_us) * bucket_us


def bucket_ceil(t_us: int, bucket_us: int) -> int:
    return -((-t_us) // bucket_us) * bucket_us


def entry_id(*parts: object) -> str:
    """A deterministic id: the same decision always gets the same id (idempotent writes)."""
    text = "v1\x1f" + "\x1f".join(["" if p is None else str(p) for p in parts])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def request_work(req: Request, settings: AccountingSettings) -> Decimal:
    """Work units of a request: weighted tokens times the GPUs its replica spans."""
    w = settings.weights_for(req.model)
    uncached = req.prompt_tokens - req.cached_prompt_tokens
    c = _CONTEXT  # exact: token counts times weights with few digits, far below 60 digits
    tokens = c.add(
        c.add(c.multiply(w.prompt, uncached), c.multiply(w.cached, req.cached_prompt_tokens)),
        c.multiply(w.completion, req.completion_tokens),
    )
    return c.multiply(tokens, req.gpu_count)


@functools.lru_cache(maxsize=256)
def nano_weights(w: TokenWeights) -> tuple[int, int, int]:
    """Token weights in integer nano work units."""
    return to_nanos(w.prompt), to_nanos(w.cached), to_nanos(w.completion)


def request_work_nanos(req: Request, settings: AccountingSettings) -> int:
    """:func:`request_work` in integer nano work units (the per-event path)."""
    return work_nanos(req, nano_weights(settings.weights_for(req.model)))


def work_nanos(req: Request, weights: tuple[int, int, int]) -> int:
    """A request's work in nano units, given its model's :func:`nano_weights`."""
    p, c, o = weights
    cached = req.cached_prompt_tokens
    return (
        p * (req.prompt_tokens - cached) + c * cached + o * req.completion_tokens
    ) * req.gpu_count


def request_buckets(req: Request, bucket_us: int) -> range:
    """Starts of the buckets a request's cost or counts touch."""
    first = bucket_floor(req.start_us, bucket_us)
    last = bucket_floor(req.end_us, bucket_us)  # cost ends there or before; counts go there
    return range(first, last + bucket_us, bucket_us)


def effective_rate(rates: Sequence[Rate], t_us: int) -> Rate | None:
    """The rate in force at ``t_us``: the latest ``effective_from`` not after it, if unexpired."""
    best: Rate | None = None
    for rate in rates:
        if rate.start_us <= t_us and (
            best is None
            or (rate.start_us, rate.price_per_hour, rate.currency)
            > (best.start_us, best.price_per_hour, best.currency)
        ):
            best = rate
    if best is None or (best.end_us is not None and best.end_us <= t_us):
        return None
    return best


def _telescoped(amount: Decimal, origin: int, span: int, lo: int, hi: int) -> Decimal:
    """``amount * (hi - lo) / span``, quantized so that consecutive pieces add up exactly."""
    return (amount * (hi - origin) / span).quantize(QUANTUM) - (
        amount * (lo - origin) / span
    ).quantize(QUANTUM)


def _rate_cost(rates: Sequence[Rate], b0: int, b1: int, costs: dict[str, Decimal]) -> bool:
    cuts = {b0, b1}
    for rate in rates:
        for t in (rate.start_us, rate.end_us):
            if t is not None and b0 < t < b1:
                cuts.add(t)
    points = sorted(cuts)
    priced = False
    with localcontext(_CONTEXT):
        for lo, hi in zip(points, points[1:], strict=False):
            in_force = effective_rate(rates, lo)
            if in_force is not None:
                part = _telescoped(
                    in_force.price_per_hour, in_force.start_us, 3600 * US_PER_SECOND, lo, hi
                )
                costs[in_force.currency] = costs.get(in_force.currency, Decimal(0)) + part
                priced = True
    return priced


def provisional_cost(rates: Sequence[Rate], b0: int, b1: int) -> dict[str, Decimal]:
    """Integral of the rate in force over ``[b0, b1)``, per currency (empty: no rate at all).

    The result is quantized to 1e-12 by telescoping from the rate's ``effective_from``: each
    piece costs ``q(cum(hi)) - q(cum(lo))`` with ``cum(t) = price * (t - effective_from)``, so
    consecutive buckets add up to the whole rental quantized once (an hour at 98.32/h is 98.32,
    not 60 rounded minutes).
    """
    costs: dict[str, Decimal] = {}
    _rate_cost(rates, b0, b1, costs)
    return costs


@dataclass(frozen=True)
class BucketCost:
    """``C_b`` per currency, and what it rests on."""

    amounts: dict[str, Decimal]
    basis: str  # billed, provisional or unpriced
    line_ids: tuple[str, ...] = ()


def bucket_cost(
    rates: Sequence[Rate], bills: Iterable[Bill], b0: int, b1: int, default_currency: str
) -> BucketCost:
    """DESIGN.md step 1: billed lines replace the provisional cost for the part they cover.

    Each line contributes ``cost * overlap / length`` (telescoped from its period start, so a
    line's buckets add up to exactly its cost); the part of the bucket no line covers is priced
    at the rate in force.
    """
    costs: dict[str, Decimal] = {}
    covered: list[tuple[int, int]] = []
    line_ids = []
    with localcontext(_CONTEXT):
        for bill in sorted(bills, key=lambda x: x.line_id):
            lo, hi = max(bill.start_us, b0), min(bill.end_us, b1)
            if hi <= lo or bill.end_us <= bill.start_us:
                continue
            part = _telescoped(bill.cost, bill.start_us, bill.end_us - bill.start_us, lo, hi)
            costs[bill.currency] = costs.get(bill.currency, Decimal(0)) + part
            covered.append((lo, hi))
            line_ids.append(bill.line_id)
    priced = False
    cursor = b0
    for lo, hi in sorted(covered) + [(b1, b1)]:
        if lo > cursor:
            priced = _rate_cost(rates, cursor, lo, costs) or priced
        cursor = max(cursor, hi)
    if line_ids:
        basis = "billed"
    elif priced:
        basis = "provisional"
    else:
        basis = "unpriced"
    if not costs:
        costs = {default_currency: Decimal(0)}
    return BucketCost(costs, basis, tuple(line_ids))


def largest_remainder(
    raw: Sequence[Decimal], total: Decimal, quantum: Decimal = QUANTUM
) -> list[Decimal]:
    """Round each value down to ``quantum`` and hand the units left to the largest remainders.

    ``total`` must be a multiple of ``quantum`` within ``len(raw)`` units of ``sum(raw)``; the
    result sums to ``total`` exactly. Ties go to the earlier item, so the result is deterministic
    for a given order of ``raw``.
    """
    with localcontext(_CONTEXT):
        floors = [v.quantize(quantum, rounding=ROUND_FLOOR) for v in raw]
        units = int((total - sum(floors, Decimal(0))) / quantum)
        if units < 0 or units > len(raw):
            raise ArithmeticError(f"cannot distribute {units} units over {len(raw)} items")
        order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - floors[i]), i))
        for i in order[:units]:
            floors[i] += quantum
    return floors


PositionKey = tuple[str | None, str | None, str]
"""(tenant, model, currency); (None, None, currency) is the idle position."""


def entry_order(key: PositionKey) -> tuple[bool, str, str, str]:
    """Entries of a bucket in a fixed order: usage by tenant, model and currency, idle last."""
    tenant, model, currency = key
    return (tenant is None, tenant or "", model or "", currency)


@dataclass
class Position:
    """What the ledger holds (or should hold) for one key of one bucket."""

    amount: Decimal = Decimal(0)
    completions: int = 0
    failed: int = 0
    prompt: int = 0
    cached: int = 0
    completion: int = 0
    work: Decimal = Decimal(0)
    busy: Decimal = Decimal(0)

    FIELDS = ("amount", "completions", "failed", "prompt", "cached", "completion", "work", "busy")

    def minus(self, other: Position) -> Position:
        return Position(*(getattr(self, f) - getattr(other, f) for f in self.FIELDS))

    def is_zero(self) -> bool:
        return all(getattr(self, f) == 0 for f in self.FIELDS)

    def to_data(self) -> list[str | int]:
        return [
            str(self.amount),
            self.completions,
            self.failed,
            self.prompt,
            self.cached,
            self.completion,
            str(self.work),
            str(self.busy),
        ]

    @classmethod
    def from_data(cls, data: list[Any]) -> Position:
        a, c, f, p, ca, co, w, b = data
        return cls(Decimal(a), c, f, p, ca, co, Decimal(w), Decimal(b))


def positions(
    facts: BucketFacts, cost: BucketCost, settings: AccountingSettings
) -> dict[PositionKey, Position]:
    """DESIGN.md steps 2 to 6 for one bucket: shares per (tenant, model), idle, counts."""
    W = settings.bucket_us
    keys: list[GroupKey] = sorted(facts.groups)
    groups = [facts.groups[k] for k in keys]
    busy_us = length(facts.busy)
    out: dict[PositionKey, Position] = {}
    with localcontext(_CONTEXT):
        total_nanos = sum(g.work for g in groups)
        total_work = from_nanos(total_nanos)
        group_busy = [Decimal(length(g.intervals)) for g in groups]
        if total_nanos > 0:
            weights = [Decimal(g.work) / total_nanos for g in groups]
        elif busy_us > 0:  # busy but no token work at all: share busy cost by busy time
            total_gb = sum(group_busy, Decimal(0))
            weights = [b / total_gb for b in group_busy]
        else:
            weights = [Decimal(0) for _ in groups]
        for n, currency in enumerate(sorted(cost.amounts)):
            amount = cost.amounts[currency]
            busy_cost = amount * busy_us / W
            raw = [busy_cost * w for w in weights] + [amount - busy_cost]
            shares = largest_remainder(raw, amount.quantize(QUANTUM, rounding=ROUND_HALF_EVEN))
            first = n == 0  # counts once per bucket, on the first currency's positions
            for i, (tenant, model) in enumerate(keys):
                g = groups[i]
                out[(tenant, model, currency)] = Position(
                    shares[i],
                    g.completions if first else 0,
                    g.failed if first else 0,
                    g.prompt if first else 0,
                    g.cached if first else 0,
                    g.completion if first else 0,
                    from_nanos(g.work).quantize(_WORK_QUANTUM) if first else Decimal(0),
                    (group_busy[i] / US_PER_SECOND).quantize(_SECONDS_QUANTUM)
                    if first
                    else Decimal(0),
                )
            out[(None, None, currency)] = Position(
                shares[-1],
                work=total_work.quantize(_WORK_QUANTUM) if first else Decimal(0),
                busy=(Decimal(busy_us) / US_PER_SECOND).quantize(_SECONDS_QUANTUM)
                if first
                else Decimal(0),
            )
    return out


def make_entry(
    resource_id: str,
    bucket_start_us: int,
    settings: AccountingSettings,
    key: PositionKey,
    pos: Position,
    kind: str,
    basis: str,
    trigger: str | None = None,
    line_ids: tuple[str, ...] = (),
) -> Entry:
    tenant, model, currency = key
    if kind in ("usage", "idle"):
        eid = entry_id(
            resource_id,
            bucket_start_us,
            settings.bucket_seconds,
            kind,
            basis,
            currency,
            tenant,
            model,
        )
    else:
        eid = entry_id(
            resource_id,
            bucket_start_us,
            settings.bucket_seconds,
            kind,
            currency,
            tenant,
            model,
            trigger,
        )
    return Entry(
        entry_id=eid,
        entry_kind=kind,
        cost_basis=basis,
        tenant_id=tenant,
        model=model,
        resource_id=resource_id,
        bucket_start_us=bucket_start_us,
        bucket_seconds=settings.bucket_seconds,
        amount=pos.amount,
        currency=currency,
        completions=pos.completions,
        failed_requests=pos.failed,
        prompt_tokens=pos.prompt,
        cached_prompt_tokens=pos.cached,
        completion_tokens=pos.completion,
        work_units=pos.work,
        busy_seconds=pos.busy,
        billing_line_ids=line_ids,
    )


def initial_entries(
    resource_id: str,
    bucket_start_us: int,
    settings: AccountingSettings,
    pos: dict[PositionKey, Position],
    cost: BucketCost,
) -> list[Entry]:
    """The entries of a bucket closing for the first time: usage per (tenant, model), idle."""
    return [
        make_entry(
            resource_id,
            bucket_start_us,
            settings,
            key,
            p,
            "idle" if key[0] is None else "usage",
            cost.basis,
            line_ids=cost.line_ids,
        )
        for key, p in sorted(pos.items(), key=lambda kv: entry_order(kv[0]))
    ]


def adjustment_entries(
    resource_id: str,
    bucket_start_us: int,
    settings: AccountingSettings,
    old: dict[PositionKey, Position],
    new: dict[PositionKey, Position],
    kind: str,
    cost: BucketCost,
    trigger: str,
) -> list[Entry]:
    """Entries that take the ledger of a closed bucket from ``old`` to ``new`` (DESIGN step 7)."""
    entries = []
    for key in sorted(set(old) | set(new), key=entry_order):
        delta = new.get(key, Position()).minus(old.get(key, Position()))
        if not delta.is_zero():
            entries.append(
                make_entry(
                    resource_id,
                    bucket_start_us,
                    settings,
                    key,
                    delta,
                    kind,
                    cost.basis,
                    trigger,
                    cost.line_ids,
                )
            )
    return entries


def allocate_bucket(
    resource_id: str,
    bucket_start_us: int,
    requests: Iterable[Request],
    rates: Sequence[Rate],
    settings: AccountingSettings,
    bills: Iterable[Bill] = (),
) -> list[Entry]:
    """All entries of one bucket closing with the given requests, rates and bills."""
    facts = BucketFacts(bucket_start_us)
    for req in requests:
        if req.resource_id == resource_id and bucket_start_us in request_buckets(
            req, settings.bucket_us
        ):
            facts.add(req, request_work_nanos(req, settings), settings.bucket_us)
    b0 = bucket_start_us
    cost = bucket_cost(rates, bills, b0, b0 + settings.bucket_us, settings.default_currency)
    return initial_entries(resource_id, b0, settings, positions(facts, cost, settings), cost)


def bucket_total(entries: Iterable[Entry]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for e in entries:
        totals[e.currency] = totals.get(e.currency, Decimal(0)) + e.amount
    return totals
