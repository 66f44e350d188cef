"""The spend of the ledger's last hour of event time, per tenant and currency (idle as its own
row, ``tenant_id`` None), for ``inferledger top``.

"The last hour" is the hour that ends at the latest bucket end in the ledger (``bucket_start +
bucket_seconds``, over every entry): the buckets that start in ``[end - 1 h, end)``. It follows
event time, not the wall clock, so a replayed history shows its own last hour. Every entry kind
counts (usage, idle, late adjustments, reconciliations), as in the SQL views.

The queries stay cheap on a large ledger, once a second: the latest day and the resources that
have entries on it or the day before come from the daily rollup (``ledger_daily``, small), and the
entries are then read through the (resource_id, bucket_start) index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from sqlalchemy import Engine, bindparam, text

WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class RecentSpend:
    """Spend per (tenant or None for idle, currency) of the buckets starting in [start, end)."""

    start: datetime | None = None
    end: datetime | None = None  # None: the ledger is empty
    rows: list[tuple[str | None, str, Decimal]] = field(default_factory=list)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=timezone.utc)  # noqa: UP017 (mypy's stubs)


def last_hour_spend(engine: Engine, window: timedelta = WINDOW) -> RecentSpend:
    with engine.connect() as conn:
        last_day = conn.execute(text("SELECT max(day) FROM ledger_daily")).scalar_one()
        if last_day is None:
            return RecentSpend()
        since = _midnight(last_day - timedelta(days=1))
        resources = list(
            conn.execute(
                text("SELECT DISTINCT resource_id FROM ledger_daily WHERE day >= :day"),
                {"day": last_day - timedelta(days=1)},
            ).scalars()
        )
        by_resource = "resource_id IN :resources AND bucket_start >= :since"
        end = conn.execute(
            text(
                "SELECT max(bucket_start + bucket_seconds * interval '1 second') "
                f"FROM ledger_entries WHERE {by_resource}"
            ).bindparams(bindparam("resources", expanding=True)),
            {"resources": resources, "since": since},
        ).scalar_one()
        if end is None:
            return RecentSpend()
        start = end - window
        rows = conn.execute(
            text(
                "SELECT tenant_id, currency, sum(amount) FROM ledger_entries "
                "WHERE resource_id IN :resources AND bucket_start >= :start "
                "AND bucket_start < :end "
                "GROUP BY tenant_id, currency ORDER BY tenant_id NULLS LAST, currency"
            ).bindparams(bindparam("resources", expanding=True)),
            {"resources": resources, "start": start, "end": end},
        ).all()
    return RecentSpend(start, end, [(r[0], r[1], Decimal(r[2])) for r in rows])
