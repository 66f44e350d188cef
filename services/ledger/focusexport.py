"""The ledger as FOCUS data generator-calculated split cost allocation (pure: no I/O).

``inferledger export focus`` reads billed lines and the ledger's positions
(``services.ledger.focusdata``) and this module turns them into allocated charges:

- **Origin charges.** Each allocated billing line (a ``usage``, ``credit`` or ``adjustment``
  line of a known GPU resource) whose period overlaps the window; and, for the buckets of the
  window that no such line covers, one synthesized *provisional GPU rate charge* per resource,
  currency and period (the day, or the hour with ``granularity="hour"``), whose cost is the sum
  of the ledger's entries there.
- **Allocated charges.** An origin's cost goes to each (tenant, model) and to unused capacity
  (idle) in proportion to the ledger's net positions (every entry kind) over the origin's
  period. For a billed line ``L`` and a piece ``g`` of its period:
  ``alloc(g, k) = cost(L) × S_g(k) / E_L``, where ``S_g(k)`` is the ledger's amount of key ``k``
  in the buckets starting in ``g``, and ``E_L`` the bill the ledger must hold over ``L``'s period
  (every allocated line of the resource and currency, each ``cost × overlap / length``). When
  the ledger holds exactly that (DESIGN section 3, step 7: reconciliation entries make each
  bucket's entries sum to its billed cost), the shares are the ledger's amounts for a line alone
  on its period, and a pro-rata split by cost for lines sharing it (a credit against a usage
  line). Any difference ``E_g - T_g`` goes to an explicit ``unallocated`` row with its reason.
- **Exact sums.** The rows of one origin are rounded to 1e-12 together (largest remainder), so
  their ``BilledCost`` and ``EffectiveCost`` sum exactly to the origin's.

Only allocated charges are written (an origin is not written beside its own split, which a
FinOps tool would count twice). ``x_OriginChargeId`` names the origin and
``x_OriginBilledCost`` holds its cost on every row (for checking; it is not to be summed).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import IO
from urllib.parse import quote

METHOD_ID = "inferledger-busy-time-v1"
PROVISIONAL_DESCRIPTION = "provisional GPU rate charge"
QUANTUM = Fraction(1, 10**12)
SERVICE_NAME = "GPU compute"
SERVICE_CATEGORY = "Compute"

COLUMNS: tuple[str, ...] = (
    "BillingAccountId",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeDescription",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "BillingCurrency",
    "PricingCategory",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "ServiceProviderName",
    "ServiceName",
    "ServiceCategory",
    "ResourceId",
    "ResourceType",
    "RegionId",
    "SkuId",
    "AllocatedMethodId",
    "AllocatedMethodDetails",
    "AllocatedResourceId",
    "AllocatedResourceName",
    "AllocatedTags",
    "x_OriginChargeId",
    "x_OriginBilledCost",
    "x_CostBasis",
    "x_UnallocatedReason",
)
"""The export's header, in order: FOCUS columns (``services.ledger.focuscolumns``), then
custom ``x_`` columns."""

METHOD_TEXT = (
    "Each bucket's cost (billed where a bill covers it, else the provisional rate) is split: "
    "busy cost = cost x busy fraction of the bucket, shared among (tenant, model) by token "
    "work; the rest is idle (unused capacity). The ledger's net amounts per (tenant, model) "
    "and idle over the origin's period, every entry kind, are this charge's shares."
)


@dataclass(frozen=True)
class BilledLine:
    line_id: str
    resource_id: str
    period_start: datetime
    period_end: datetime
    cost: Decimal
    currency: str
    charge_category: str
    provider: str | None = None
    sku: str | None = None
    pricing_category: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Position:
    """The ledger's net amount of one key in one bucket (every entry kind summed)."""

    resource_id: str
    bucket_start: datetime
    tenant_id: str | None
    model: str | None
    currency: str
    amount: Decimal
    provisional: bool = True


@dataclass(frozen=True)
class ResourceInfo:
    provider: str | None = None
    instance_type: str | None = None
    region: str | None = None


Key = tuple[str, str | None, str | None]
"""(kind, tenant, model): kind ``usage``, ``idle`` or ``unallocated``."""


def iso(ts: datetime) -> str:
    """ISO 8601 UTC with ``Z``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(value: Decimal) -> str:
    """An exact decimal string, never exponent notation, never ``-0``."""
    text = format(value, "f")
    return text[1:] if value.is_zero() and text.startswith("-") else text


def _floor(ts: datetime, granularity: str) -> datetime:
    ts = ts.astimezone(UTC)
    if granularity == "hour":
        return ts.replace(minute=0, second=0, microsecond=0)
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def _step(granularity: str) -> timedelta:
    return timedelta(hours=1) if granularity == "hour" else timedelta(days=1)


def pieces(
    start: datetime, end: datetime, granularity: str | None
) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at UTC hours or days (``None``: one piece)."""
    if granularity is None:
        return [(start, end)]
    out: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        nxt = min(end, _floor(cursor, granularity) + _step(granularity))
        out.append((cursor, nxt))
        cursor = nxt
    return out


def _overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> Fraction:
    seconds = (min(a1, b1) - max(a0, b0)).total_seconds()
    return Fraction(seconds) if seconds > 0 else Fraction(0)


def _length(a0: datetime, a1: datetime) -> Fraction:
    return Fraction((a1 - a0).total_seconds())


def largest_remainder(raw: list[Fraction], total: Decimal) -> list[Decimal]:
    """``raw`` rounded to 1e-12 so that the results add up to ``total`` exactly (``total`` is a
    multiple of 1e-12 and ``sum(raw) == total``): floors, then a unit to the largest
    remainders (ties: first)."""
    floors = [Fraction(v // QUANTUM) * QUANTUM for v in raw]
    units = int((Fraction(total) - sum(floors, Fraction(0))) / QUANTUM)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - floors[i]), i))
    for i in order[:units]:
        floors[i] += QUANTUM
    return [Decimal(f.numerator) / Decimal(f.denominator) for f in floors]


def _key(p: Position) -> Key:
    return ("idle", None, None) if p.tenant_id is None else ("usage", p.tenant_id, p.model)


def _month(ts: datetime) -> tuple[datetime, datetime]:
    start = ts.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


@dataclass(frozen=True)
class Origin:
    charge_id: str
    resource_id: str
    period_start: datetime
    period_end: datetime
    cost: Decimal
    currency: str
    charge_category: str
    description: str
    cost_basis: str
    provider: str | None
    sku: str | None
    pricing_category: str | None


@dataclass(frozen=True)
class Allocated:
    origin: Origin
    start: datetime
    end: datetime
    key: Key
    amount: Decimal
    reason: str | None = None


def _split_line(
    line: BilledLine,
    same: list[BilledLine],
    positions: list[Position],
    granularity: str | None,
) -> list[Allocated]:
    origin = Origin(
        charge_id=line.line_id,
        resource_id=line.resource_id,
        period_start=line.period_start,
        period_end=line.period_end,
        cost=line.cost,
        currency=line.currency,
        charge_category=line.charge_category,
        description=line.description or f"GPU {line.charge_category} charge",
        cost_basis="billed",
        provider=line.provider,
        sku=line.sku,
        pricing_category=line.pricing_category,
    )
    slots: list[tuple[datetime, datetime, Key, Fraction, str | None]] = []
    expected_total = Fraction(0)
    per_piece: list[tuple[datetime, datetime, Fraction, dict[Key, Fraction]]] = []
    for g0, g1 in pieces(line.period_start, line.period_end, granularity):
        expected = sum(
            (
                Fraction(other.cost)
                * _overlap(other.period_start, other.period_end, g0, g1)
                / _length(other.period_start, other.period_end)
                for other in same
            ),
            Fraction(0),
        )
        held: dict[Key, Fraction] = defaultdict(Fraction)
        for p in positions:
            if g0 <= p.bucket_start < g1:
                held[_key(p)] += Fraction(p.amount)
        expected_total += expected
        per_piece.append((g0, g1, expected, held))
    if expected_total == 0:
        slots.append(
            (
                line.period_start,
                line.period_end,
                ("unallocated", None, None),
                Fraction(line.cost),
                "the allocated bills of this resource and period net to zero: no share to "
                "split this line by",
            )
        )
    else:
        factor = Fraction(line.cost) / expected_total
        for g0, g1, expected, held in per_piece:
            for key in sorted(held, key=lambda k: (k[0] != "usage", str(k[1]), str(k[2]))):
                if held[key] != 0:
                    slots.append((g0, g1, key, factor * held[key], None))
            gap = expected - sum(held.values(), Fraction(0))
            if gap != 0:
                slots.append(
                    (
                        g0,
                        g1,
                        ("unallocated", None, None),
                        factor * gap,
                        "the ledger's entries over this period differ from the bills covering "
                        "it (buckets not yet closed or reconciled, or a bill not aligned to "
                        "the ledger's buckets)",
                    )
                )
    amounts = largest_remainder([s[3] for s in slots], line.cost)
    return [
        Allocated(origin, g0, g1, key, amount, reason)
        for (g0, g1, key, _, reason), amount in zip(slots, amounts, strict=True)
    ]


def allocate(
    lines: Iterable[BilledLine],
    positions: Iterable[Position],
    since: datetime,
    until: datetime,
    granularity: str | None = None,
) -> list[Allocated]:
    """The allocated charges of every origin charge of ``[since, until)``.

    ``lines``: the allocated billing lines of the resources (overlapping the window, and any
    others of the same resources overlapping their periods); ``positions``: the ledger's net
    amounts per bucket and key over the window and the lines' periods. Granularity ``None``
    keeps each billed line's period (provisional charges are per day); ``hour`` or ``day``
    cuts the allocated charges' periods at UTC hours or days."""
    lines = sorted(lines, key=lambda ln: (ln.resource_id, ln.period_start, ln.line_id))
    positions = list(positions)
    by_resource: dict[tuple[str, str], list[BilledLine]] = defaultdict(list)
    for ln in lines:
        by_resource[(ln.resource_id, ln.currency)].append(ln)
    pos_by: dict[tuple[str, str], list[Position]] = defaultdict(list)
    for p in positions:
        pos_by[(p.resource_id, p.currency)].append(p)

    out: list[Allocated] = []
    for ln in lines:
        if ln.period_end <= since or ln.period_start >= until:
            continue
        mine = [
            p
            for p in pos_by[(ln.resource_id, ln.currency)]
            if ln.period_start <= p.bucket_start < ln.period_end
        ]
        out.extend(_split_line(ln, by_resource[(ln.resource_id, ln.currency)], mine, granularity))

    # provisional origins: buckets of the window no allocated line of the resource covers
    covered: dict[str, list[BilledLine]] = defaultdict(list)
    for ln in lines:
        covered[ln.resource_id].append(ln)
    groups: dict[tuple[str, str, datetime], list[Position]] = defaultdict(list)
    for p in positions:
        if not since <= p.bucket_start < until:
            continue
        if any(c.period_start <= p.bucket_start < c.period_end for c in covered[p.resource_id]):
            continue
        groups[(p.resource_id, p.currency, _floor(p.bucket_start, granularity or "day"))].append(p)
    for (resource, currency, g0), members in sorted(groups.items()):
        g1 = g0 + _step(granularity or "day")
        held: dict[Key, Decimal] = defaultdict(Decimal)
        for p in members:
            held[_key(p)] += p.amount
        total = sum(held.values(), Decimal(0))
        if all(v == 0 for v in held.values()):
            continue
        origin = Origin(
            charge_id=f"provisional:{resource}:{currency}:{iso(g0)}",
            resource_id=resource,
            period_start=g0,
            period_end=g1,
            cost=total,
            currency=currency,
            charge_category="usage",
            description=PROVISIONAL_DESCRIPTION,
            cost_basis="provisional",
            provider=None,
            sku=None,
            pricing_category=None,
        )
        for key in sorted(held, key=lambda k: (k[0] != "usage", str(k[1]), str(k[2]))):
            if held[key] != 0:
                out.append(Allocated(origin, g0, g1, key, held[key]))
    return out


def allocated_resource_id(key: Key) -> str | None:
    """What the cost is allocated to, unique within the resource and charge period:
    ``<tenant>/<model>``, each percent-encoded (so a ``/`` in a name cannot collide). Null for
    idle and unallocated rows: FOCUS makes AllocatedResourceId null on the unallocated portion
    of an origin charge, which unused capacity is."""
    kind, tenant, model = key
    if kind != "usage":
        return None
    return f"{quote(tenant or '', safe='')}/{quote(model or '', safe='')}"


def allocated_resource_name(key: Key) -> str | None:
    kind, tenant, model = key
    if kind != "usage":
        return None
    return f"tenant {tenant}, model {model}"


def _ratio(amount: Decimal, total: Decimal) -> float:
    return 0.0 if total == 0 else float(Fraction(amount) / Fraction(total))


def to_rows(
    allocated: Iterable[Allocated],
    resources: dict[str, ResourceInfo] | None = None,
    tenant: str | None = None,
) -> Iterator[dict[str, str]]:
    """FOCUS rows (column name to text; empty text is null). ``tenant``: only that tenant's
    usage rows (their sum is then not the origin's)."""
    resources = resources or {}
    for a in allocated:
        kind, t, m = a.key
        if tenant is not None and (kind != "usage" or t != tenant):
            continue
        o = a.origin
        info = resources.get(o.resource_id, ResourceInfo())
        provider = o.provider or info.provider or "unknown"
        b0, b1 = _month(a.start)
        details = {
            "Elements": [{"AllocatedRatio": _ratio(a.amount, o.cost)}],
            "x_Method": METHOD_TEXT,
            "x_Kind": kind,
            "x_Share": "idle: unused capacity of the GPU resource"
            if kind == "idle"
            else "unallocated: not matched by the ledger"
            if kind == "unallocated"
            else "busy-time share of the buckets, by token work",
        }
        tags: dict[str, str | None] = {"inferledger/kind": kind}
        if kind == "usage":
            tags = {"inferledger/tenant": t, "inferledger/model": m, "inferledger/kind": kind}
        amount = money(a.amount)
        yield {
            "BillingAccountId": "",
            "BillingPeriodStart": iso(b0),
            "BillingPeriodEnd": iso(b1),
            "ChargePeriodStart": iso(a.start),
            "ChargePeriodEnd": iso(a.end),
            "ChargeCategory": o.charge_category.capitalize(),
            "ChargeDescription": o.description,
            "BilledCost": amount,
            "EffectiveCost": amount,
            "ListCost": "",
            "ContractedCost": "",
            "BillingCurrency": o.currency,
            "PricingCategory": o.pricing_category or "",
            "ProviderName": provider,
            "PublisherName": provider,
            "InvoiceIssuerName": provider,
            "ServiceProviderName": provider,
            "ServiceName": SERVICE_NAME,
            "ServiceCategory": SERVICE_CATEGORY,
            "ResourceId": o.resource_id,
            "ResourceType": info.instance_type or "",
            "RegionId": info.region or "",
            "SkuId": o.sku or "",
            "AllocatedMethodId": METHOD_ID,
            "AllocatedMethodDetails": json.dumps(details, sort_keys=True),
            "AllocatedResourceId": allocated_resource_id(a.key) or "",
            "AllocatedResourceName": allocated_resource_name(a.key) or "",
            "AllocatedTags": json.dumps(tags, sort_keys=True, ensure_ascii=False),
            "x_OriginChargeId": o.charge_id,
            "x_OriginBilledCost": money(o.cost),
            "x_CostBasis": o.cost_basis,
            "x_UnallocatedReason": a.reason or "",
        }


def write_csv(rows: Iterable[dict[str, str]], stream: IO[str]) -> int:
    """Write the header and ``rows`` as CSV (RFC 4180 quoting, ``\\r\\n``) to ``stream`` (text,
    opened with ``newline=""``); returns the number of rows."""
    writer = csv.DictWriter(stream, fieldnames=list(COLUMNS), quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    return n
