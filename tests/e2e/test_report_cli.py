"""`inferledger report` says why it has nothing to show, instead of a bare "(no rows)" or an
SQL traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def report(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "report"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_unmigrated_database_is_a_one_line_error(empty_db_url):
    out = report(dict(os.environ, INFERLEDGER_DATABASE_URL=empty_db_url))
    assert out.returncode == 1
    assert "no ledger yet: run `inferledger migrate`" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_empty_ledger_says_how_buckets_close(db_url):
    out = report(dict(os.environ, INFERLEDGER_DATABASE_URL=db_url))
    assert out.returncode == 0, out.stderr
    assert "(no rows)" in out.stdout
    assert "budgets" not in out.stdout and "alerts" not in out.stdout  # none set: no sections
    assert "run all --until-idle` closes everything fed so far" in out.stderr


def test_audit_and_a_follow_on_an_unmigrated_database_are_one_line_errors(
    empty_db_url, kafka_bootstrap
):
    env = dict(
        os.environ,
        INFERLEDGER_DATABASE_URL=empty_db_url,
        INFERLEDGER_KAFKA_BOOTSTRAP=kafka_bootstrap,
    )
    for args in (
        ["audit", "--skip-topics"],
        ["run", "all", "--until-idle", "--follow", "--timeout", "5"],
    ):
        out = subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 1, (args, out.stderr)
        assert "no ledger yet: run `inferledger migrate`" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_migrate_says_what_it_did_and_a_missing_database_is_a_one_line_error(empty_db_url):
    def migrate(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", "migrate"],
            env=dict(os.environ, INFERLEDGER_DATABASE_URL=url),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    first = migrate(empty_db_url)
    assert first.returncode == 0 and "migrated the database from nothing to" in first.stdout
    again = migrate(empty_db_url)
    assert again.returncode == 0 and "at the latest revision already" in again.stdout
    gone = migrate(empty_db_url.rsplit("/", 1)[0] + "/il_test_no_such_database")
    assert gone.returncode == 1 and "cannot use the database" in gone.stderr
    assert 'database "il_test_no_such_database" does not exist' in gone.stderr
    assert "Traceback" not in gone.stderr


def test_budgets_and_recent_alerts_follow_the_table_and_json_keeps_its_shape(db_url):
    import json
    from datetime import UTC, datetime
    from decimal import Decimal

    from sqlalchemy import create_engine, text

    from services.accounting.budgets import Budget, alert_id, alert_text, period_bounds
    from services.ledger.budgets import create_budget

    engine = create_engine(db_url)
    budget_id = create_budget(
        engine, name="acme daily", tenant_id="acme", period="day", amount=Decimal("10")
    )
    start, end = period_bounds("day", datetime.now(UTC))
    budget = Budget(budget_id, "acme", "day", Decimal("10"), name="acme daily")
    said = alert_text("threshold", budget, start, Decimal("8.5"), threshold=Decimal("0.8"))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO budget_alerts (alert_id, budget_id, tenant_id, kind, subject, "
                "period_start, period_end, threshold, spend, budget, currency, text) VALUES "
                "(:id, :b, 'acme', 'threshold', '0.8', :s, :e, 0.8, 8.5, 10, 'USD', :t)"
            ),
            {"id": alert_id(budget_id, start, "threshold", "0.8"), "b": budget_id, "s": start,
             "e": end, "t": said},
        )  # fmt: skip
    engine.dispose()
    env = dict(os.environ, INFERLEDGER_DATABASE_URL=db_url, COLUMNS="400")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", "report", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    table = run()
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert out.index("(no rows)") < out.index("budgets (current period, UTC)")
    assert "acme daily" in out and budget_id in out
    assert "recent alerts (latest 20, newest first)" in out
    assert "80 %" in out and said in out
    other = run("--tenant", "globex").stdout
    assert "budgets (current period, UTC): none" in other and "newest first): none" in other

    plain = run("--format", "json")
    assert plain.returncode == 0 and json.loads(plain.stdout) == []  # the rows, as before
    full = run("--format", "json", "--alerts")
    assert full.returncode == 0, full.stderr
    doc = json.loads(full.stdout)
    assert set(doc) == {"cost_per_completion", "budgets", "recent_alerts"}
    assert doc["cost_per_completion"] == []
    assert [b["budget_id"] for b in doc["budgets"]] == [budget_id]
    assert Decimal(doc["budgets"][0]["spend"]) == 0
    [alert] = doc["recent_alerts"]
    assert alert["kind"] == "threshold" and Decimal(alert["threshold"]) == Decimal("0.8")
    assert alert["text"] == said and alert["tenant_id"] == "acme"
    wrong = run("--format", "csv", "--alerts")
    assert wrong.returncode != 0 and "--alerts is for --format json" in wrong.stderr
