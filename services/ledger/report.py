"""Reading the ledger back: the cost-per-completion table and the fleet summary."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text


def cost_per_completion(
    engine: Engine, tenant: str | None = None, since: date | None = None, until: date | None = None
) -> list[dict[str, Any]]:
    """Rows of ``v_cost_per_completion`` summed over the chosen days, per tenant and model."""
    sql = """
        SELECT tenant_id, model, currency,
               sum(completions)::bigint AS completions,
               sum(failed_requests)::bigint AS failed_requests,
               sum(prompt_tokens)::bigint AS prompt_tokens,
               sum(completion_tokens)::bigint AS completion_tokens,
               sum(amount) AS amount,
               round(sum(amount) / nullif(sum(completions), 0), 12) AS cost_per_completion,
               round(sum(amount) * 1000 / nullif(sum(prompt_tokens + completion_tokens), 0), 12)
                   AS cost_per_1k_tokens
        FROM v_cost_per_completion
        WHERE (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant)
          AND (CAST(:since AS date) IS NULL OR day >= :since)
          AND (CAST(:until AS date) IS NULL OR day < :until)
        GROUP BY tenant_id, model, currency
        ORDER BY tenant_id, model, currency
    """
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {"tenant": tenant, "since": since, "until": until})
        return [dict(r._mapping) for r in rows]


def fleet_summary(engine: Engine) -> list[dict[str, Any]]:
    """Per resource and currency: total cost, busy fraction and idle cost (all entry kinds)."""
    sql = """
        SELECT resource_id, currency,
               sum(amount) AS cost,
               coalesce(sum(amount) FILTER (WHERE tenant_id IS NULL), 0) AS idle_cost,
               round(sum(busy_seconds) FILTER (WHERE tenant_id IS NULL)
                     / nullif(count(DISTINCT bucket_start) * max(bucket_seconds), 0), 4)
                   AS busy_fraction
        FROM ledger_entries
        GROUP BY resource_id, currency
        ORDER BY resource_id, currency
    """
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def render(rows: list[dict[str, Any]], fmt: str, title: str = "") -> str:
    if fmt == "json":
        return json.dumps([{k: _plain(v) for k, v in r.items()} for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        if rows:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows([{k: _plain(v) for k, v in r.items()} for r in rows])
        return out.getvalue()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    if not rows:
        return "(no rows)\n"
    for col in rows[0]:
        table.add_column(col, justify="right" if not isinstance(rows[0][col], str) else "left")
    for r in rows:
        table.add_row(*["" if v is None else str(_plain(v)) for v in r.values()])
    buffer = io.StringIO()
    Console(file=buffer, width=200, force_terminal=False).print(table)
    return buffer.getvalue()


def provisional_vs_billed(engine: Engine) -> list[dict[str, Any]]:
    """Per tenant (idle as its own row): what provisional rates said, what the bill says."""
    sql = """
        SELECT coalesce(tenant_id, '(idle)') AS tenant, currency,
               sum(amount) FILTER (WHERE entry_kind <> 'reconciliation') AS provisional,
               coalesce(sum(amount) FILTER (WHERE entry_kind = 'reconciliation'), 0)
                   AS reconciliation,
               sum(amount) AS billed,
               sum(completions)::bigint AS completions,
               round(sum(amount) / nullif(sum(completions), 0), 12) AS billed_per_completion
        FROM ledger_entries
        GROUP BY tenant_id, currency
        ORDER BY tenant_id IS NULL, tenant_id, currency
    """
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]
