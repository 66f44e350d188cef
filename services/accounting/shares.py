"""A bucket's cost shared out (DESIGN.md section 3, steps 2 to 6), and rounding that adds up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from services.accounting.facts import BucketFacts, GroupKey, from_nanos, length
from services.accounting.model import CONTEXT, QUANTUM, US_PER_SECOND, AccountingSettings
from services.accounting.pricing import BucketCost

_SECONDS_QUANTUM = Decimal("1e-6")
_WORK_QUANTUM = Decimal("1e-6")
_ZERO_QUANTUM = Decimal(0).quantize(QUANTUM)  # 0E-12, as a zero share quantized to 1e-12


def largest_remainder(
    raw: Sequence[Decimal], total: Decimal, quantum: Decimal = QUANTUM
) -> list[Decimal]:
    """Round each value down to ``quantum`` and hand the units left to the largest remainders.

    ``total`` must be a multiple of ``quantum`` within ``len(raw)`` units of ``sum(raw)``; the
    result sums to ``total`` exactly. Ties go to the earlier item, so the result is deterministic
    for a given order of ``raw``.
    """
    with localcontext(CONTEXT):
        floors = [v.quantize(quantum, rounding=ROUND_FLOOR) for v in raw]
        units = int((total - sum(floors, Decimal(0))) / quantum)
        if units < 0 or units > len(raw):
            raise ArithmeticError(f"cannot distribute {units} units over {len(raw)} items")
        if units:  # (often none: every value already a multiple of the quantum)
            order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - floors[i]), i))
            for i in order[:units]:
                floors[i] += quantum
    return floors


PositionKey = tuple[str | None, str | None, str]
"""(tenant, model, currency); (None, None, currency) is the idle position."""


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
    within: int = 0  # completions within their objective
    cancelled: int = 0  # cancelled requests (a part of failed)
    slo_miss_amount: Decimal = Decimal(0)  # the parts of amount per request class; the part
    failed_amount: Decimal = Decimal(0)  # within objective is amount minus these three
    cancelled_amount: Decimal = Decimal(0)

    FIELDS = (
        "amount",
        "completions",
        "failed",
        "prompt",
        "cached",
        "completion",
        "work",
        "busy",
        "within",
        "cancelled",
        "slo_miss_amount",
        "failed_amount",
        "cancelled_amount",
    )

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
            self.within,
            self.cancelled,
            str(self.slo_miss_amount),
            str(self.failed_amount),
            str(self.cancelled_amount),
        ]

    @classmethod
    def from_data(cls, data: list[Any]) -> Position:
        a, c, f, p, ca, co, w, b, *more = data
        if not more:  # stored before request classes: what its ledger rows hold (0 of each)
            return cls(Decimal(a), c, f, p, ca, co, Decimal(w), Decimal(b))
        wi, cn, sm, fa, cc = more
        return cls(
            Decimal(a), c, f, p, ca, co, Decimal(w), Decimal(b),
            wi, cn, Decimal(sm), Decimal(fa), Decimal(cc),
        )  # fmt: skip


def class_amounts(amount: Decimal, weights: Sequence[int]) -> list[Decimal]:
    """``amount`` split over the request classes in proportion to ``weights`` (integers: nano
    work units, or microseconds), rounded to 1e-12 by largest remainder so that the parts add
    up to ``amount`` exactly (``amount`` itself a multiple of 1e-12). All to the first class
    (within objective) when every weight is 0."""
    total = sum(weights)
    if total == 0 or amount == 0:
        return [amount] + [Decimal(0)] * (len(weights) - 1)
    if weights[0] == total and amount > 0:  # the common case: all within objective
        # exactly what largest_remainder gives then: the amount, and zeros at the quantum
        first = amount.quantize(QUANTUM, ROUND_FLOOR, CONTEXT)
        return [first] + [_ZERO_QUANTUM] * (len(weights) - 1)
    with localcontext(CONTEXT):
        raw = [amount * w / total for w in weights]
    return largest_remainder(raw, amount)


def positions(
    facts: BucketFacts, cost: BucketCost, settings: AccountingSettings
) -> dict[PositionKey, Position]:
    """DESIGN.md steps 2 to 6 for one bucket: shares per (tenant, model), idle, counts."""
    W = settings.bucket_us
    keys: list[GroupKey] = sorted(facts.groups)
    groups = [facts.groups[k] for k in keys]
    busy_us = length(facts.busy)
    out: dict[PositionKey, Position] = {}
    with localcontext(CONTEXT):
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
                parts = class_amounts(shares[i], g.class_work if g.work > 0 else g.class_time)
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
                    g.within if first else 0,
                    g.cancelled if first else 0,
                    parts[1],
                    parts[2],
                    parts[3],
                )
            out[(None, None, currency)] = Position(
                shares[-1],
                work=total_work.quantize(_WORK_QUANTUM) if first else Decimal(0),
                busy=(Decimal(busy_us) / US_PER_SECOND).quantize(_SECONDS_QUANTUM)
                if first
                else Decimal(0),
            )
    return out
