"""Budgets in Postgres: creating one (``inferledger budget set``, the demo), and reading back
their status and the alerts they fired (``inferledger report``, the demo).

Validation of user input (amounts, thresholds, webhook URLs) is the caller's; the database's
checks (migration 0006) hold whatever gets here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, insert, text

from services.ledger.schema import budgets

RECENT_ALERTS = 20
"""How many of the latest alerts ``inferledger report`` shows."""


def create_budget(
    engine: Engine,
    *,
    name: str,
    tenant_id: str | None,
    period: str,
    amount: Decimal,
    currency: str = "USD",
    thresholds: Sequence[Decimal] = (Decimal("0.5"), Decimal("0.8"), Decimal(1)),
    include_idle_share: bool = False,
    webhooks: Sequence[str] = (),
    secret: str | None = None,
) -> str:
    """Insert a budget (``tenant_id=None``: all tenants); returns its new id. The alerts
    processor evaluates it against all its periods on its next pass."""
    budget_id = uuid.uuid4().hex
    with engine.begin() as conn:
        conn.execute(
            insert(budgets).values(
                budget_id=budget_id,
                name=name,
                tenant_id=tenant_id,
                period=period,
                amount=amount,
                currency=currency,
                thresholds=list(thresholds),
                include_idle_share=include_idle_share,
                webhooks=list(webhooks),
                webhook_secret=secret,
            )
        )
    return budget_id


def has_budgets(engine: Engine) -> bool:
    """Whether any budget was ever set (deleted ones count: their alerts are kept)."""
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT EXISTS (SELECT 1 FROM budgets)")).scalar_one())


def budget_status(engine: Engine, tenant: str | None = None) -> list[dict[str, Any]]:
    """``v_budget_status``: each budget (not deleted) in its current period, UTC; with
    ``tenant``, only that tenant's budgets."""
    sql = """
        SELECT name, coalesce(tenant_id, '*') AS tenant_id, period,
               (period_start AT TIME ZONE 'UTC')::date AS period_start, budget, currency, spend,
               round(spent_fraction * 100, 1) AS spent_percent, forecast_spend, alerts_fired,
               budget_id
        FROM v_budget_status
        WHERE CAST(:tenant AS text) IS NULL OR tenant_id = :tenant
        ORDER BY tenant_id NULLS FIRST, name, budget_id
    """
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), {"tenant": tenant})]


def recent_alerts(
    engine: Engine, tenant: str | None = None, limit: int = RECENT_ALERTS
) -> list[dict[str, Any]]:
    """The latest ``limit`` alerts of ``budget_alerts``, newest first (with ``tenant``: that
    tenant's). ``threshold`` is a fraction (0.8), ``forecast_spend`` the projected spend of a
    forecast alert, ``baseline``/``observed`` the costs per completion of an anomaly."""
    sql = """
        SELECT fired_at, kind, coalesce(tenant_id, '*') AS tenant_id, threshold, forecast_spend,
               baseline, observed, spend, budget, currency, text, alert_id, budget_id
        FROM budget_alerts
        WHERE CAST(:tenant AS text) IS NULL OR tenant_id = :tenant
        ORDER BY fired_at DESC, kind, threshold DESC NULLS LAST, alert_id
        LIMIT :limit
    """
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {"tenant": tenant, "limit": limit})
        return [dict(r._mapping) for r in rows]
