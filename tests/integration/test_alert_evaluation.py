"""The alerts evaluator against a real ledger: thresholds, the forecast and anomaly rules with
their exact numbers, a budget set after the data, and two evaluators at once (each alert is
inserted by exactly one)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy import create_engine, text

from services.alerts.evaluate import Evaluator

DAY = datetime(2024, 3, 10, tzinfo=UTC)
WALL = datetime(2026, 11, 30, 12, tzinfo=UTC)
ENTRY = text(
    "INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, tenant_id, model, "
    "resource_id, bucket_start, bucket_seconds, completions, amount, currency) VALUES "
    "(:id, 'usage', 'provisional', :tenant, :model, 'node-1', :at, 60, :n, :amount, 'USD')"
)
BUDGET = text(
    "INSERT INTO budgets (budget_id, name, tenant_id, period, amount, currency) "
    "VALUES (:id, :name, :tenant, :period, :amount, 'USD')"
)


def add(engine: Any, rows: list[tuple[str, str, datetime, int, str]]) -> None:
    with engine.begin() as conn:
        for tenant, model, at, n, amount in rows:
            conn.execute(
                ENTRY,
                {"id": uuid.uuid4().hex, "tenant": tenant, "model": model, "at": at, "n": n,
                 "amount": Decimal(amount)},
            )  # fmt: skip


def budget(engine: Any, name: str, tenant: str, period: str, amount: str) -> str:
    budget_id = uuid.uuid4().hex
    with engine.begin() as conn:
        conn.execute(
            BUDGET,
            {"id": budget_id, "name": name, "tenant": tenant, "period": period, "amount": amount},
        )
    return budget_id


def fired(engine: Any) -> dict[tuple[str, str], Any]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM budget_alerts")).mappings().all()
    return {(r["kind"], r["subject"]): r for r in rows}


def test_threshold_and_forecast_by_event_time(db_url):
    engine = create_engine(db_url)
    # acme: 0.20 every 10 minutes from 00:00 to 05:50 on 2024-03-10 (7.20 in all)
    add(engine, [("acme", "m", DAY + timedelta(minutes=10 * i), 1, "0.20") for i in range(36)])
    budget(engine, "acme daily", "acme", "day", "10")
    alerts = Evaluator(engine).run(WALL)
    got = fired(engine)
    assert set(got) == {("threshold", "0.5"), ("forecast", "")}
    # the period's "now" is the end of its latest bucket (05:51), not the wall clock (2026)
    now = DAY + timedelta(minutes=351)
    covered = Decimal((now - DAY).total_seconds())
    left = Decimal((DAY + timedelta(days=1) - now).total_seconds())
    with localcontext() as ctx:
        ctx.prec = 60
        want = (Decimal("7.2") + Decimal("7.2") / covered * left).quantize(Decimal("1e-12"))
    assert got["forecast", ""]["forecast_spend"] == want
    assert got["forecast", ""]["spend"] == Decimal("7.2")
    assert len(alerts) == 2
    assert Evaluator(engine).run(WALL) == []  # fired once, whoever evaluates again
    engine.dispose()


def test_an_anomaly_carries_its_baseline_and_what_was_observed(db_url):
    engine = create_engine(db_url)
    start = DAY + timedelta(hours=5)
    # 30 hours at 0.01 per completion, then an hour at 0.05, then a little of the next hour
    rows = [("beta", "m", start + timedelta(hours=h), 10, "0.10") for h in range(30)]
    rows.append(("beta", "m", start + timedelta(hours=30), 10, "0.50"))
    rows.append(("beta", "m", start + timedelta(hours=31), 1, "0.01"))
    add(engine, rows)
    budget(engine, "beta monthly", "beta", "month", "1000")
    Evaluator(engine).run(WALL)
    got = fired(engine)
    assert set(got) == {("anomaly", "m")}
    anomaly = got["anomaly", "m"]
    assert (anomaly["baseline"], anomaly["observed"]) == (Decimal("0.01"), Decimal("0.05"))
    assert "beta" in anomaly["text"] and "m" in anomaly["text"]
    engine.dispose()


def test_a_budget_set_after_the_data_is_evaluated_at_once(db_url):
    engine = create_engine(db_url)
    add(engine, [("acme", "m", DAY, 1, "6")])
    evaluator = Evaluator(engine)
    assert evaluator.run(WALL) == []  # no budget yet: it has read the ledger once
    budget(engine, "acme daily", "acme", "day", "10")
    assert [f.row["subject"] for f in evaluator.run(WALL)] == ["0.5"]
    engine.dispose()


def test_two_evaluators_at_once_insert_each_alert_exactly_once(db_url):
    import threading

    engine = create_engine(db_url, pool_size=10)
    add(engine, [("acme", "m", DAY + timedelta(hours=h), 1, "1") for h in range(10)])
    for i in range(8):
        budget(engine, f"b{i}", "acme", "day", str(2 + i))
    results: list[list[Any]] = [[], []]

    def evaluate(n: int) -> None:
        results[n] = Evaluator(engine).run(WALL)

    threads = [threading.Thread(target=evaluate, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [f.row["alert_id"] for r in results for f in r]
    assert len(ids) == len(set(ids)) == len(fired_ids(engine))
    engine.dispose()


def fired_ids(engine: Any) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT alert_id FROM budget_alerts")).scalars())
