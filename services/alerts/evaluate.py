"""Budgets against the ledger: what is due, recorded once in ``budget_alerts``.

The rules are the accounting core's (:mod:`services.accounting.budgets`); this module only reads
what they need from Postgres and records what they decide. A period's spend is the SQL function
``inferledger_budget_spend`` (migration 0006), the one definition ``v_budget_status`` uses too.

Which periods are evaluated: those holding ledger entries recorded since the previous pass
(less a margin, as transactions commit out of ``recorded_at`` order), the current one, and, on
the first pass and for a budget set since the previous pass, every period with data (a budget
set mid-period is evaluated at once against the spend so far). Time is event time: a period's
"now" is the end of the latest bucket of the budget's scope in it (never past the wall clock),
so a backfill of last month alerts as it would have then. An alert is inserted with
``ON CONFLICT DO NOTHING``: the unique key (budget, period, kind, subject) makes it fire once,
whatever restarts, replays or concurrent evaluators happen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from services.accounting.budgets import (
    DEFAULT_RULES,
    AlertRules,
    Budget,
    HourPoint,
    alert_id,
    alert_text,
    anomaly_due,
    anomaly_subject,
    forecast_due,
    period_bounds,
    threshold_str,
    thresholds_due,
)

COMMIT_MARGIN = timedelta(minutes=5)
"""How far back of the latest ``recorded_at`` seen the next pass looks again."""

BUDGETS_SQL = text(
    "SELECT budget_id, name, tenant_id, period, amount, currency, thresholds, "
    "include_idle_share, webhooks FROM budgets WHERE deleted_at IS NULL ORDER BY budget_id"
)
# the scope of a budget: its tenant's entries, or every tenant's (and idle with its share)
SCOPE = (
    "e.currency = :currency AND ((CAST(:tenant AS text) IS NOT NULL AND e.tenant_id = :tenant) "
    "OR (CAST(:tenant AS text) IS NULL AND (e.tenant_id IS NOT NULL OR :idle)))"
)
DAYS_SQL = text(
    "SELECT DISTINCT date_trunc('day', e.bucket_start AT TIME ZONE 'UTC') AS day "
    f"FROM ledger_entries e WHERE e.recorded_at >= :since AND {SCOPE}"
)
SPEND_SQL = text("SELECT inferledger_budget_spend(:budget_id, :start, :end)")
# The same scope on the daily rollup (ledger_daily, migration 0008), whose (day, ...) key finds
# a scope's first or latest day without reading the journal: the journal is then read for that
# day only (its month partition). On a large ledger, an all-tenants budget otherwise scans a
# month each pass for the latest bucket, and the whole ledger for the first. (Budget periods
# are whole UTC days, so the latest day with entries holds the latest bucket.)
DAILY_SCOPE = SCOPE.replace("e.", "d.")
LATEST_SQL = text(
    "WITH last AS (SELECT max(d.day) AS day FROM ledger_daily d "
    "WHERE d.day >= CAST(CAST(:start AS timestamptz) AT TIME ZONE 'UTC' AS date) "
    "AND d.day < CAST(:end AS timestamptz) AT TIME ZONE 'UTC' "  # days begun before the end
    f"AND {DAILY_SCOPE}) "
    "SELECT max(e.bucket_start + make_interval(secs => e.bucket_seconds)) "
    "FROM ledger_entries e, last "
    "WHERE e.bucket_start >= CAST(last.day AS timestamp) AT TIME ZONE 'UTC' "
    "AND e.bucket_start < CAST(last.day + 1 AS timestamp) AT TIME ZONE 'UTC' "
    f"AND e.bucket_start >= :start AND e.bucket_start < :end AND {SCOPE}"
)
FIRST_SQL = text(
    f"WITH first AS (SELECT min(d.day) AS day FROM ledger_daily d WHERE {DAILY_SCOPE}) "
    "SELECT min(e.bucket_start) FROM ledger_entries e, first "
    "WHERE e.bucket_start >= CAST(first.day AS timestamp) AT TIME ZONE 'UTC' "
    f"AND e.bucket_start < CAST(first.day + 1 AS timestamp) AT TIME ZONE 'UTC' AND {SCOPE}"
)
FIRED_SQL = text(
    "SELECT threshold FROM budget_alerts WHERE budget_id = :budget_id AND period_start = :start "
    "AND kind = 'threshold'"
)
HOURS_SQL = text(
    "SELECT e.tenant_id, e.model, date_trunc('hour', e.bucket_start AT TIME ZONE 'UTC') "
    "AT TIME ZONE 'UTC' AS hour, sum(e.amount), "
    "sum(e.completions) FROM ledger_entries e "
    "WHERE e.tenant_id IS NOT NULL AND e.model IS NOT NULL AND e.bucket_start >= :start "
    f"AND e.bucket_start < :end AND {SCOPE} GROUP BY 1, 2, 3"
)
RECORDED_SQL = text("SELECT max(recorded_at) FROM ledger_entries")
INSERT_SQL = text(
    "INSERT INTO budget_alerts (alert_id, budget_id, tenant_id, kind, subject, period_start, "
    "period_end, threshold, spend, budget, currency, forecast_spend, baseline, observed, text) "
    "VALUES (:alert_id, :budget_id, :tenant_id, :kind, :subject, :period_start, :period_end, "
    ":threshold, :spend, :budget, :currency, :forecast_spend, :baseline, :observed, :text) "
    "ON CONFLICT DO NOTHING RETURNING alert_id, fired_at"
)


@dataclass
class Fired:
    """An alert this evaluator inserted (so it, and only it, goes on to deliver it)."""

    row: dict[str, Any]
    model: str | None = None


def budget_of(row: Any) -> Budget:
    return Budget(
        budget_id=row.budget_id,
        tenant_id=row.tenant_id,
        period=row.period,
        amount=Decimal(row.amount),
        currency=row.currency,
        thresholds=tuple(sorted({Decimal(threshold_str(Decimal(t))) for t in row.thresholds})),
        include_idle_share=bool(row.include_idle_share),
        webhooks=tuple(row.webhooks or ()),
        name=row.name or None,
    )


class Evaluator:
    """Evaluates every budget on each :meth:`run` (one pass); remembers how far it has read."""

    def __init__(self, engine: Engine, rules: AlertRules = DEFAULT_RULES) -> None:
        self.engine = engine
        self.rules = rules
        self._since: datetime | None = None  # None: the first pass reads everything
        self._known: set[str] = set()  # budgets evaluated before (a new one: all its periods)

    def run(self, wall_now: datetime) -> list[Fired]:
        fired: list[Fired] = []
        with self.engine.begin() as conn:
            latest_recorded = conn.execute(RECORDED_SQL).scalar_one()
            budgets = [budget_of(r) for r in conn.execute(BUDGETS_SQL)]
            for budget in budgets:
                fired += self._budget(conn, budget, wall_now)
        if latest_recorded is not None:
            self._since = latest_recorded - COMMIT_MARGIN
        self._known = {b.budget_id for b in budgets}
        return fired

    def _scope(self, budget: Budget) -> dict[str, Any]:
        return {
            "currency": budget.currency,
            "tenant": budget.tenant_id,
            "idle": budget.include_idle_share,
        }

    def _periods(
        self, conn: Connection, budget: Budget, wall_now: datetime
    ) -> set[tuple[datetime, datetime]]:
        since = self._since if budget.budget_id in self._known else None
        since = since or datetime(1, 1, 2, tzinfo=UTC)
        days = conn.execute(DAYS_SQL, {"since": since, **self._scope(budget)}).scalars()
        periods = {period_bounds(budget.period, d.replace(tzinfo=UTC)) for d in days}
        periods.add(period_bounds(budget.period, wall_now))  # a budget set mid-period: at once
        return periods

    def _budget(self, conn: Connection, budget: Budget, wall_now: datetime) -> list[Fired]:
        fired: list[Fired] = []
        scope = self._scope(budget)
        for start, end in sorted(self._periods(conn, budget, wall_now)):
            spend = self._spend(conn, budget, start, end)
            done = {
                Decimal(threshold_str(Decimal(t)))
                for t in conn.execute(
                    FIRED_SQL, {"budget_id": budget.budget_id, "start": start}
                ).scalars()
            }
            for t in thresholds_due(budget, spend, frozenset(done)):
                fired += self._insert(
                    conn, budget, start, end, "threshold", threshold_str(t), spend,
                    threshold=t,
                    text_=alert_text("threshold", budget, start, spend, threshold=t),
                )  # fmt: skip
            latest = conn.execute(LATEST_SQL, {"start": start, "end": end, **scope}).scalar_one()
            if latest is None:
                continue
            now = min(latest, wall_now)
            fired += self._forecast(conn, budget, start, end, spend, now)
            fired += self._anomalies(conn, budget, start, end, now)
        return fired

    def _spend(self, conn: Connection, budget: Budget, start: datetime, end: datetime) -> Decimal:
        value = conn.execute(
            SPEND_SQL, {"budget_id": budget.budget_id, "start": start, "end": end}
        ).scalar_one()
        return Decimal(value or 0)

    def _forecast(
        self,
        conn: Connection,
        budget: Budget,
        start: datetime,
        end: datetime,
        spend: Decimal,
        now: datetime,
    ) -> list[Fired]:
        if now >= end:
            return []
        first = conn.execute(FIRST_SQL, self._scope(budget)).scalar_one()
        if first is None:
            return []
        window = self.rules.forecast_window
        trailing = self._spend(conn, budget, now - window, now)
        forecast = forecast_due(budget, spend, trailing, now - first, now, end, self.rules)
        if forecast is None:
            return []
        return self._insert(
            conn, budget, start, end, "forecast", "", spend,
            forecast=forecast,
            text_=alert_text("forecast", budget, start, spend, forecast=forecast),
        )  # fmt: skip

    def _anomalies(
        self, conn: Connection, budget: Budget, start: datetime, end: datetime, now: datetime
    ) -> list[Fired]:
        """Per tenant and model: the latest complete hour (before ``now``'s hour) against the
        trailing window's hours, when that hour lies in this period."""
        latest_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        if not start <= latest_hour < end:
            return []
        rows = conn.execute(
            HOURS_SQL,
            {
                "start": latest_hour - self.rules.anomaly_window,
                "end": latest_hour + timedelta(hours=1),
                **self._scope(budget),
            },
        ).all()
        series: dict[tuple[str, str], list[HourPoint]] = {}
        for tenant, model, hour, cost, completions in rows:
            point = HourPoint(hour, Decimal(cost), int(completions))
            series.setdefault((tenant, model), []).append(point)
        fired: list[Fired] = []
        for (tenant, model), points in sorted(series.items()):
            latest = next((p for p in points if p.hour_start == latest_hour), None)
            if latest is None:
                continue
            finding = anomaly_due([p for p in points if p is not latest], latest, self.rules)
            if finding is None:
                continue
            spend = self._spend(conn, budget, start, end)
            fired += self._insert(
                conn, budget, start, end, "anomaly", anomaly_subject(budget, tenant, model), spend,
                baseline=finding.baseline, observed=finding.observed, model=model,
                tenant=tenant,
                text_=alert_text("anomaly", budget, start, spend, finding=finding, model=model,
                                 tenant_id=tenant),
            )  # fmt: skip
        return fired

    def _insert(
        self,
        conn: Connection,
        budget: Budget,
        start: datetime,
        end: datetime,
        kind: str,
        subject: str,
        spend: Decimal,
        *,
        text_: str,
        threshold: Decimal | None = None,
        forecast: Decimal | None = None,
        baseline: Decimal | None = None,
        observed: Decimal | None = None,
        model: str | None = None,
        tenant: str | None = None,
    ) -> list[Fired]:
        row = {
            "alert_id": alert_id(budget.budget_id, start, kind, subject),  # type: ignore[arg-type]
            "budget_id": budget.budget_id,
            "tenant_id": tenant if tenant is not None else budget.tenant_id,
            "kind": kind,
            "subject": subject,
            "period_start": start,
            "period_end": end,
            "threshold": threshold,
            "spend": spend,
            "budget": budget.amount,
            "currency": budget.currency,
            "forecast_spend": forecast,
            "baseline": baseline,
            "observed": observed,
            "text": text_,
        }
        inserted = conn.execute(INSERT_SQL, row).first()
        if inserted is None:  # fired before, by this evaluator or another
            return []
        row["fired_at"] = inserted.fired_at
        return [Fired(row, model)]
