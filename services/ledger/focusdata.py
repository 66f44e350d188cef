"""What ``inferledger export focus`` reads from Postgres: allocated billing lines, the ledger's
net positions per bucket and key, and resources' provider, type and region. The allocation
itself is the pure ``services.ledger.focusexport``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from services.ledger.focusexport import (
    Allocated,
    BilledLine,
    Position,
    ResourceInfo,
    allocate,
)

LINES_SQL = """
SELECT b.line_id, b.resource_id, b.period_start, b.period_end, b.cost, b.currency,
       lower(b.charge_category), b.provider, b.sku, b.pricing_category, b.description
FROM billing_lines b
WHERE b.resource_id IS NOT NULL
  AND b.period_end > b.period_start
  AND lower(b.charge_category) = ANY(:categories)
  AND b.period_end > :lo AND b.period_start < :hi
  AND (EXISTS (SELECT 1 FROM resources r WHERE r.resource_id = b.resource_id)
       OR EXISTS (SELECT 1 FROM ledger_entries e WHERE e.resource_id = b.resource_id))
ORDER BY b.resource_id, b.period_start, b.line_id
"""
"""Allocated lines (the complement of ``v_unallocated_billing``, with the configured charge
categories) overlapping ``[lo, hi)``."""

POSITIONS_SQL = """
SELECT resource_id, bucket_start, tenant_id, model, currency, sum(amount)
FROM ledger_entries
WHERE bucket_start >= :lo AND bucket_start < :hi
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3 NULLS LAST, 4
"""


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def billed_lines(
    engine: Engine, categories: Sequence[str], lo: datetime, hi: datetime
) -> list[BilledLine]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(LINES_SQL), {"categories": [c.lower() for c in categories], "lo": lo, "hi": hi}
        ).all()
    return [
        BilledLine(
            line_id=r[0],
            resource_id=r[1],
            period_start=_utc(r[2]),
            period_end=_utc(r[3]),
            cost=r[4],
            currency=r[5],
            charge_category=r[6],
            provider=r[7],
            sku=r[8],
            pricing_category=r[9],
            description=r[10],
        )
        for r in rows
    ]


def positions(engine: Engine, lo: datetime, hi: datetime) -> list[Position]:
    with engine.connect() as conn:
        rows = conn.execute(text(POSITIONS_SQL), {"lo": lo, "hi": hi}).all()
    return [Position(r[0], _utc(r[1]), r[2], r[3], r[4], r[5]) for r in rows]


def resource_info(engine: Engine) -> dict[str, ResourceInfo]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT resource_id, provider, instance_type, region FROM resources")
        ).all()
    return {r[0]: ResourceInfo(r[1], r[2], r[3]) for r in rows}


def focus_allocation(
    engine: Engine,
    categories: Sequence[str],
    since: datetime,
    until: datetime,
    granularity: str | None = None,
) -> list[Allocated]:
    """The allocated charges of every origin charge of ``[since, until)``: billed lines
    overlapping it (with the other lines and the ledger over their whole periods, so that each
    origin is split whole), and provisional charges for the window's unbilled buckets."""
    lines = billed_lines(engine, categories, since, until)
    lo = min([since, *(ln.period_start for ln in lines)])
    hi = max([until, *(ln.period_end for ln in lines)])
    if (lo, hi) != (since, until):
        lines = billed_lines(engine, categories, lo, hi)
    return allocate(lines, positions(engine, lo, hi), since, until, granularity)
