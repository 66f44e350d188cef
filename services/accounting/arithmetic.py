"""The allocation arithmetic of DESIGN.md section 3, steps 1 to 6, for one resource and bucket."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, localcontext

from services.accounting.model import (
    US_PER_SECOND,
    AccountingSettings,
    Entry,
    Rate,
    Request,
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
    text = "\x1f".join("" if p is None else str(p) for p in ("v1", *parts))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def request_work(req: Request, settings: AccountingSettings) -> Decimal:
    """Work units of a request: weighted tokens times the GPUs its replica spans."""
    w = settings.weights_for(req.model)
    uncached = req.prompt_tokens - req.cached_prompt_tokens
    with localcontext(_CONTEXT):
        return (
            w.prompt * uncached
            + w.cached * req.cached_prompt_tokens
            + w.completion * req.completion_tokens
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


def provisional_cost(rates: Sequence[Rate], b0: int, b1: int) -> dict[str, Decimal]:
    """Integral of the rate in force over ``[b0, b1)``, per currency (empty: no rate at all).

    The result is quantized to 1e-12 by telescoping from the rate's ``effective_from``: each
    piece costs ``q(cum(hi)) - q(cum(lo))`` with ``cum(t) = price * (t - effective_from)``, so
    consecutive buckets add up to the whole rental quantized once (an hour at 98.32/h is 98.32,
    not 60 rounded minutes).
    """
    cuts = {b0, b1}
    for rate in rates:
        for t in (rate.start_us, rate.end_us):
            if t is not None and b0 < t < b1:
                cuts.add(t)
    points = sorted(cuts)
    costs: dict[str, Decimal] = {}
    with localcontext(_CONTEXT):
        for lo, hi in zip(points, points[1:], strict=False):
            in_force = effective_rate(rates, lo)
            if in_force is not None:
                price, origin = in_force.price_per_hour, in_force.start_us
                part = (price * (hi - origin) / _US_PER_HOUR).quantize(QUANTUM) - (
                    price * (lo - origin) / _US_PER_HOUR
                ).quantize(QUANTUM)
                costs[in_force.currency] = costs.get(in_force.currency, Decimal(0)) + part
    return costs


def union_length(intervals: Iterable[tuple[int, int]]) -> int:
    total = 0
    cur_lo = cur_hi = None
    for lo, hi in sorted(intervals):
        if cur_hi is None or lo > cur_hi:
            if cur_hi is not None and cur_lo is not None:
                total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        elif hi > cur_hi:
            cur_hi = hi
    if cur_hi is not None and cur_lo is not None:
        total += cur_hi - cur_lo
    return total


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


@dataclass
class _Group:
    work: Decimal = Decimal(0)
    intervals: list[tuple[int, int]] = field(default_factory=list)
    completions: int = 0
    failed: int = 0
    prompt: int = 0
    cached: int = 0
    completion: int = 0


def allocate_bucket(
    resource_id: str,
    bucket_start_us: int,
    requests: Iterable[Request],
    rates: Sequence[Rate],
    settings: AccountingSettings,
) -> list[Entry]:
    """All entries of one closed bucket: a usage entry per (tenant, model) and one idle entry.

    ``requests`` are the resource's requests whose interval overlaps the bucket or that finish
    in it (others are ignored). The result does not depend on their order, and a request given
    twice (same ``event_id``) counts once.
    """
    W = settings.bucket_us
    b0, b1 = bucket_start_us, bucket_start_us + W
    unique = {r.event_id: r for r in requests}
    groups: dict[tuple[str, str], _Group] = {}
    all_intervals: list[tuple[int, int]] = []
    with localcontext(_CONTEXT):
        for eid in sorted(unique):  # fixed summation order: arrival order cannot matter
            req = unique[eid]
            key = (req.tenant_id, req.model)
            lo, hi = max(req.start_us, b0), min(req.end_us, b1)
            duration = req.end_us - req.start_us
            work = Decimal(0)
            if duration == 0:
                if b0 <= req.start_us < b1:
                    work = request_work(req, settings)
            elif hi > lo:
                work = request_work(req, settings) * (hi - lo) / duration
            finishes_here = b0 <= req.end_us < b1
            if hi <= lo and work == 0 and not finishes_here:
                continue
            g = groups.setdefault(key, _Group())
            g.work += work
            if hi > lo:
                g.intervals.append((lo, hi))
                all_intervals.append((lo, hi))
            if finishes_here:
                if req.status == "ok":
                    g.completions += 1
                else:
                    g.failed += 1
                g.prompt += req.prompt_tokens
                g.cached += req.cached_prompt_tokens
                g.completion += req.completion_tokens

        busy_us = union_length(all_intervals)
        keys = sorted(groups)
        total_work = sum((groups[k].work for k in keys), Decimal(0))
        group_busy = [Decimal(union_length(groups[k].intervals)) for k in keys]
        if total_work > 0:
            weights = [groups[k].work / total_work for k in keys]
        elif busy_us > 0:  # busy but no token work at all: share busy cost by busy time
            total_gb = sum(group_busy, Decimal(0))
            weights = [b / total_gb for b in group_busy]
        else:
            weights = [Decimal(0) for _ in keys]

        costs = provisional_cost(rates, b0, b1)
        basis = "provisional"
        if not costs:
            costs = {settings.default_currency: Decimal(0)}
            basis = "unpriced"
        entries: list[Entry] = []
        for n, currency in enumerate(sorted(costs)):
            cost = costs[currency]
            busy_cost = cost * busy_us / W
            raw = [busy_cost * w for w in weights] + [cost - busy_cost]
            total = cost.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)
            amounts = largest_remainder(raw, total)
            with_counts = n == 0  # counts once per bucket, on the first currency's entries
            for i, key in enumerate(keys):
                g = groups[key]
                entries.append(
                    Entry(
                        entry_id=entry_id(resource_id, b0, W, "usage", basis, currency, *key),
                        entry_kind="usage",
                        cost_basis=basis,
                        tenant_id=key[0],
                        model=key[1],
                        resource_id=resource_id,
                        bucket_start_us=b0,
                        bucket_seconds=settings.bucket_seconds,
                        amount=amounts[i],
                        currency=currency,
                        completions=g.completions if with_counts else 0,
                        failed_requests=g.failed if with_counts else 0,
                        prompt_tokens=g.prompt if with_counts else 0,
                        cached_prompt_tokens=g.cached if with_counts else 0,
                        completion_tokens=g.completion if with_counts else 0,
                        work_units=g.work.quantize(_WORK_QUANTUM),
                        busy_seconds=(group_busy[i] / US_PER_SECOND).quantize(_SECONDS_QUANTUM),
                    )
                )
            entries.append(
                Entry(
                    entry_id=entry_id(resource_id, b0, W, "idle", basis, currency, None, None),
                    entry_kind="idle",
                    cost_basis=basis,
                    tenant_id=None,
                    model=None,
                    resource_id=resource_id,
                    bucket_start_us=b0,
                    bucket_seconds=settings.bucket_seconds,
                    amount=amounts[-1],
                    currency=currency,
                    work_units=total_work.quantize(_WORK_QUANTUM),
                    busy_seconds=(Decimal(busy_us) / US_PER_SECOND).quantize(_SECONDS_QUANTUM),
                )
            )
    return entries


def bucket_total(entries: Iterable[Entry]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for e in entries:
        totals[e.currency] = totals.get(e.currency, Decimal(0)) + e.amount
    return totals
