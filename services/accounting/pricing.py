"""What a bucket costs (DESIGN.md section 3, step 1): rates in force and billed lines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from services.accounting.model import CONTEXT, QUANTUM, US_PER_SECOND, Bill, Rate


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
    with localcontext(CONTEXT):
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
    with localcontext(CONTEXT):
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
