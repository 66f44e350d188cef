"""What the HTML report shows, read from the ledger (``inferledger report --format html`` and
the demo's report): :func:`collect` returns an :class:`HtmlReportData` for
``services.ledger.htmlreport`` to render.

Over time, the ledger's entries are summed per time step (5 minutes, an hour or a day as the
data's span suits: :func:`~services.ledger.htmlreport.step_for`) from the journal, by
``bucket_start``; busy fraction per resource and step has ``v_gpu_utilization``'s arithmetic
(hourly, it is that view). Over the whole period, costs per completion with the idle share are
``inferledger report --include-idle-share``'s rows (``v_cost_per_completion_with_idle``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine, text

from services.ledger.budgets import budget_status, has_budgets, recent_alerts
from services.ledger.htmlreport import (
    MAX_RESOURCES,
    HtmlReportData,
    ResourceTotal,
    SpendPoint,
    Total,
    UnitCostPoint,
    UtilCell,
    step_for,
)
from services.ledger.report import (
    ReportSpec,
    cost_report,
    journal_filter,
    period_bounds,
    provisional_vs_billed,
)


def _step_sql(step: int) -> str:
    """The start of a bucket's time step, UTC (steps are aligned to the epoch, so days and
    hours are UTC days and hours)."""
    return f"to_timestamp(floor(extract(epoch FROM bucket_start) / {int(step)}) * {int(step)})"


def collect(
    engine: Engine,
    spec: ReportSpec,
    title: str = "inferledger: what each completion cost",
    notes: list[str] | None = None,
    now: datetime | None = None,
) -> HtmlReportData:
    """Everything the HTML report shows for the selection of ``spec`` (its tenant, model and
    UTC days; its keys are ignored: the page has its own groupings)."""
    per_completion = cost_report(
        engine,
        ReportSpec(
            tenant=spec.tenant,
            model=spec.model,
            since=spec.since,
            until=spec.until,
            include_idle_share=True,
        ),
    )
    first, last = period_bounds(per_completion)
    where, params = journal_filter(spec.tenant, spec.model, spec.since, spec.until)
    data = HtmlReportData(
        title=title,
        generated_at=now or datetime.now(UTC),
        since_given=spec.since is not None,
        until_given=spec.until is not None,
        tenant=spec.tenant,
        model=spec.model,
        per_completion=per_completion.rows,
        notes=list(notes or []),
    )
    with engine.connect() as conn:
        fresh = conn.execute(
            text(
                "SELECT max(bucket_start + bucket_seconds * interval '1 second') "
                "FROM ledger_entries"
            )
        ).scalar_one()
        span = conn.execute(
            text(
                "SELECT min(bucket_start), "
                "max(bucket_start + bucket_seconds * interval '1 second'), "
                f"max(bucket_seconds) FROM ledger_entries {where}"
            ),
            params,
        ).one()
        totals = conn.execute(
            text(
                "SELECT currency, sum(amount), "
                "coalesce(sum(amount) FILTER (WHERE tenant_id IS NULL), 0), "
                "sum(completions)::bigint, count(*) FILTER (WHERE cost_basis = 'unpriced') "
                f"FROM ledger_entries {where} GROUP BY currency ORDER BY currency"
            ),
            params,
        ).all()
    data.fresh_until = fresh
    data.totals = [Total(c, a, i, int(n or 0), int(u or 0)) for c, a, i, n, u in totals]
    if span[0] is None:
        data.first_day, data.last_day = first, last
        return data
    data.data_from, data.data_to = span[0], span[1]
    data.first_day = first or span[0].astimezone(UTC).date()
    data.last_day = last or span[1].astimezone(UTC).date()
    step = step_for(span[1] - span[0], int(span[2]))
    data.step_seconds = step
    bucket = _step_sql(step)
    with engine.connect() as conn:
        data.spend = [
            SpendPoint(t, tenant, cur, amount)
            for t, tenant, cur, amount in conn.execute(
                text(
                    f"SELECT {bucket} AS t, tenant_id, currency, sum(amount) FROM ledger_entries "
                    f"{where} GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS LAST, 3"
                ),
                params,
            )
        ]
        tenant_where = (
            f"{where} AND tenant_id IS NOT NULL" if where else "WHERE tenant_id IS NOT NULL"
        )
        data.unit_costs = [
            UnitCostPoint(t, tenant, model, cur, int(c), int(k), amount)
            for t, tenant, model, cur, c, k, amount in conn.execute(
                text(
                    f"SELECT {bucket} AS t, tenant_id, coalesce(model, ''), currency, "
                    "sum(completions)::bigint, sum(prompt_tokens + completion_tokens)::bigint, "
                    f"sum(amount) FROM ledger_entries {tenant_where} "
                    "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
                ),
                params,
            )
        ]
        # resources: those of the selection (with a tenant or model chosen, those it used),
        # every entry of theirs in the period (busy, idle and reconciliation alike)
        res_where, res_params = journal_filter(None, None, spec.since, spec.until)
        if spec.tenant is not None or spec.model is not None:
            used = f"resource_id IN (SELECT DISTINCT resource_id FROM ledger_entries {where})"
            res_where = f"{res_where} AND {used}" if res_where else f"WHERE {used}"
            res_params = {**res_params, **params}
        busy = (
            "round(sum(busy_seconds) FILTER (WHERE tenant_id IS NULL) "
            "/ nullif(count(DISTINCT bucket_start) * max(bucket_seconds), 0), 6)"
        )
        idle = "coalesce(sum(amount) FILTER (WHERE tenant_id IS NULL), 0)"
        data.resources = [
            ResourceTotal(r, cur, cost, idle_cost, frac)
            for r, cur, cost, idle_cost, frac in conn.execute(
                text(
                    f"SELECT resource_id, currency, sum(amount), {idle}, {busy} "
                    f"FROM ledger_entries {res_where} GROUP BY 1, 2 ORDER BY 1, 2"
                ),
                res_params,
            )
        ]
        top = _top_resources(data.resources)
        if top:
            cell_where = (
                f"{res_where} AND resource_id = ANY(:top)"
                if res_where
                else "WHERE resource_id = ANY(:top)"
            )
            data.utilization = [
                UtilCell(r, t, cur, frac, cost, idle_cost)
                for r, t, cur, frac, cost, idle_cost in conn.execute(
                    text(
                        f"SELECT resource_id, {bucket} AS t, currency, {busy}, sum(amount), {idle} "
                        f"FROM ledger_entries {cell_where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
                    ),
                    {**res_params, "top": top},
                )
            ]
    data.reconciliation = provisional_vs_billed(
        engine, spec.tenant, spec.model, spec.since, spec.until
    )
    if has_budgets(engine):
        data.budgets = budget_status(engine, spec.tenant)
        data.alerts = recent_alerts(engine, spec.tenant)
    return data


def _top_resources(resources: list[ResourceTotal]) -> list[str]:
    cost: dict[str, Decimal] = {}
    for r in resources:
        cost[r.resource] = cost.get(r.resource, Decimal(0)) + r.cost
    return sorted(cost, key=lambda k: (-cost[k], k))[:MAX_RESOURCES]
