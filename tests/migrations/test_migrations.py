"""The schema belongs to Alembic: upgrade, downgrade, upgrade again, no drift, append-only."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from services.ledger.audit import ROLLUP_DIFF
from services.ledger.db import alembic_config

ROW = """INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, resource_id, bucket_start,
         bucket_seconds, amount, currency) VALUES
         ('0123456789abcdef0123', 'idle', 'provisional', 'node-1', '2024-01-01T00:00:00Z', 60,
          0.6, 'USD')"""


def test_upgrade_downgrade_upgrade_and_no_drift(empty_db_url):
    cfg = alembic_config(empty_db_url)
    command.upgrade(cfg, "head")
    engine = create_engine(empty_db_url)
    names = set(inspect(engine).get_table_names())
    assert {"ledger_entries", "gpu_rates", "resources", "consumer_offsets"} <= names
    views = set(inspect(engine).get_view_names())
    assert {"v_cost_per_completion", "v_tenant_spend", "v_cost_per_completion_with_idle"} <= views
    command.check(cfg)  # models and migrations agree
    command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert inspect(engine).get_view_names() == []
    command.upgrade(cfg, "head")
    command.check(cfg)
    engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = 0",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",
    ],
)
def test_the_database_refuses_to_change_ledger_rows(db_url, statement):
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(ROW))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT amount FROM ledger_entries")).scalar_one() == Decimal(
            "0.6"
        )
    engine.dispose()


BUDGET = """INSERT INTO budgets (budget_id, name, tenant_id, period, amount, currency, webhooks)
            VALUES (:id, 'acme monthly', 'acme', 'month', :amount, 'USD', :webhooks)"""
ALERT = """INSERT INTO budget_alerts (alert_id, budget_id, tenant_id, kind, subject, period_start,
           period_end, threshold, spend, budget, currency, text)
           VALUES (:id, 'b1', 'acme', 'threshold', '0.8', '2026-11-01T00:00:00Z',
                   '2026-12-01T00:00:00Z', 0.8, 80, 100, 'USD', 'acme spent 80 %')"""


def test_an_alert_fires_once_per_budget_period_kind_and_subject(db_url):
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(BUDGET), {"id": "b1", "amount": 100, "webhooks": []})
        thresholds = conn.execute(text("SELECT thresholds FROM budgets")).scalar_one()
        assert thresholds == [Decimal("0.5"), Decimal("0.8"), Decimal("1.0")]
        conn.execute(text(ALERT), {"id": "a1"})
        conn.execute(
            text("""INSERT INTO alert_deliveries (alert_id, target, attempt, status_code,
                    delivered) VALUES ('a1', 'kafka:budget-alerts', 1, NULL, true)""")
        )
    # another processor (or a replay) computing another id for the same alert: refused
    unique = "uq_budget_alerts_budget_id_period_start_kind_subject"
    with pytest.raises(DBAPIError, match=unique), engine.begin() as conn:
        conn.execute(text(ALERT), {"id": "a2"})
    # ... and the usual way to fire: nothing happens the second time
    with engine.begin() as conn:
        inserted = conn.execute(text(ALERT + " ON CONFLICT DO NOTHING"), {"id": "a3"}).rowcount
    assert inserted == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM budget_alerts")).scalar_one() == 1
    # an alert needs its budget; deleting a budget is soft, so alerts keep theirs
    with pytest.raises(DBAPIError, match="fk_budget_alerts_budget_id_budgets"), engine.begin() as c:
        c.execute(text("DELETE FROM budgets"))
    engine.dispose()


@pytest.mark.parametrize(
    ("amount", "webhooks", "constraint"),
    [
        (0, [], "ck_budgets_amount"),
        (-1, [], "ck_budgets_amount"),
        (10, ["ftp://example.com/x"], "ck_budgets_webhooks"),
        (10, ["file:///etc/passwd"], "ck_budgets_webhooks"),
        (10, ["https://ok.example.com/a", "http://"], "ck_budgets_webhooks"),
        (10, ["javascript:alert(1)"], "ck_budgets_webhooks"),
    ],
)
def test_the_database_refuses_a_budget_the_cli_would_refuse(db_url, amount, webhooks, constraint):
    engine = create_engine(db_url)
    with pytest.raises(DBAPIError, match=constraint), engine.begin() as conn:
        conn.execute(text(BUDGET), {"id": "b1", "amount": amount, "webhooks": webhooks})
    with engine.begin() as conn:  # and accepts http(s) URLs with a host
        conn.execute(
            text(BUDGET),
            {"id": "b2", "amount": 1, "webhooks": ["https://hooks.example.com/T0/B1?x=1",
                                                   "HTTP://10.0.0.5:8080"]},
        )  # fmt: skip
    engine.dispose()


def test_the_budget_and_spend_views_are_empty_on_an_empty_ledger(db_url):
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT * FROM v_budget_status")).all() == []
        assert conn.execute(text("SELECT * FROM v_tenant_idle_share")).all() == []
        assert conn.execute(text("SELECT * FROM v_tenant_spend")).all() == []
        assert conn.execute(text("SELECT * FROM v_cost_per_completion_with_idle")).all() == []
    engine.dispose()


def test_the_audit_recomputes_the_rollup_as_its_trigger_adds_to_it():
    """Migration 0011 keeps its own copy of the rollup's sums (migrations are frozen history),
    0008's extended; the audit's copy (services/ledger/rollup.py) must stay the same text."""
    import importlib.util
    from pathlib import Path

    from services.ledger.rollup import DAILY_SUMS

    def load(prefix: str):
        versions = Path(__file__).resolve().parents[2] / "migrations" / "versions"
        (path,) = versions.glob(f"{prefix}_*.py")
        spec = importlib.util.spec_from_file_location(f"m{prefix}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    m8, m11 = load("0008"), load("0011")
    assert m11.DAILY_SUMS == DAILY_SUMS
    assert DAILY_SUMS in m11.DAILY_FUNCTION
    assert DAILY_SUMS.startswith(m8.DAILY_SUMS + ",")
    assert m8.DAILY_SUMS in m8.DAILY_TRIGGER
    # the same hardening as 0008's function
    assert "SECURITY DEFINER SET search_path = pg_catalog, pg_temp" in m11.DAILY_FUNCTION
    assert "REVOKE ALL ON FUNCTION ledger_daily_add() FROM PUBLIC" in m11.DAILY_FUNCTION


def test_0008_moves_an_existing_ledger_exactly_and_back(empty_db_url):
    """Rows in several months, on a month's last microsecond, decades back and years ahead (the
    default partition), idle and tenants with and without a model: upgrade keeps every column
    of every row and the views' answers, fills the rollup as the journal says; downgrade and
    upgrade again keep the rows too."""
    cfg = alembic_config(empty_db_url)
    command.upgrade(cfg, "0007")
    engine = create_engine(empty_db_url)
    with engine.begin() as conn:
        conn.execute(
            text("""INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, tenant_id,
                    model, resource_id, bucket_start, bucket_seconds, completions,
                    prompt_tokens, amount, currency, recorded_at, row_hash)
                    SELECT 'e' || g, CASE WHEN g % 4 = 0 THEN 'idle' ELSE 'usage' END,
                           'provisional', CASE WHEN g % 4 <> 0 THEN 't' || g % 3 END,
                           CASE WHEN g % 4 <> 0 AND g % 5 <> 0 THEN 'm' END, 'n' || g % 2,
                           (ARRAY['2010-05-31 23:59:59.999999Z', '2026-09-30 23:59:59.999999Z',
                                  '2026-10-01Z', '2026-11-15Z', '2041-01-01Z'
                                 ]::timestamptz[])[1 + g % 5],
                           60, g % 3, g, (g - 300) * 1e-12, 'USD',
                           '2020-01-01Z'::timestamptz + g * interval '1 s', md5(g::text)
                    FROM generate_series(1, 600) g""")
        )

    from services.contracts.ledger import LEDGER_ENTRY_GOODPUT, LEDGER_TABLE_COLUMNS

    # the columns 0008 knew (0011 adds the goodput ones, 0 on these rows)
    old = ", ".join(
        c for c in LEDGER_TABLE_COLUMNS if c not in {g.name for g in LEDGER_ENTRY_GOODPUT}
    )

    def snapshot() -> list[list[tuple[str, ...]]]:
        with engine.connect() as conn:
            return [
                [tuple(map(str, r)) for r in conn.execute(text(f"SELECT {q}"))]
                for q in (
                    f"{old} FROM ledger_entries ORDER BY entry_id",
                    "* FROM v_cost_per_completion_with_idle ORDER BY 1, 2, 3, 4",
                    "* FROM v_tenant_spend ORDER BY 1, 2, 3",
                )
            ]

    before = snapshot()
    command.upgrade(cfg, "head")
    assert snapshot() == before
    with engine.connect() as conn:
        assert conn.execute(text(ROLLUP_DIFF)).all() == []
        far = conn.execute(
            text("""SELECT count(*) FROM ledger_entries_default
                    WHERE bucket_start < '2011-01-01Z' OR bucket_start >= '2041-01-01Z'""")
        )
        assert far.scalar_one() == 240  # a wrong clock's months make no partition
    command.downgrade(cfg, "0007")
    assert snapshot() == before
    command.upgrade(cfg, "head")
    assert snapshot()[0] == before[0]
    engine.dispose()


GROUPS = "('inferledger_writer', 'inferledger_reader', 'inferledger_tenant')"
# what this database grants the group roles: its objects' privileges and policies (pg_shdepend)
# and its own privileges (pg_database's ACL, shared)
GRANTED = f"""
SELECT (SELECT count(*) FROM pg_shdepend
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND refobjid IN (SELECT oid FROM pg_roles WHERE rolname IN {GROUPS}))
     + (SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a
        WHERE d.datname = current_database()
          AND a.grantee IN (SELECT oid FROM pg_roles WHERE rolname IN {GROUPS}))
"""


def test_downgrading_the_roles_revokes_this_databases_grants_and_keeps_the_roles(db_url):
    cfg = alembic_config(db_url)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text(GRANTED)).scalar_one() > 50
    command.downgrade(cfg, "0008")
    with engine.connect() as conn:
        assert conn.execute(text(GRANTED)).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM pg_policy")).scalar_one() == 0
        assert not conn.execute(
            text(
                "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
                "AND (relrowsecurity OR reloptions IS NOT NULL)"
            )
        ).all()
        assert conn.execute(text("SELECT to_regclass('tenant_logins')")).scalar_one() is None
        # other databases use the roles (they are the server's): they stay
        assert (
            conn.execute(
                text(f"SELECT count(*) FROM pg_roles WHERE rolname IN {GROUPS}")
            ).scalar_one()
            == 3
        )
        # the budget spend function is everyone's again, as before 0009
        assert conn.execute(
            text(
                "SELECT has_function_privilege('public', "
                "'inferledger_budget_spend(text, timestamptz, timestamptz)', 'EXECUTE')"
            )
        ).scalar_one()
    command.upgrade(cfg, "head")
    command.check(cfg)
    with engine.connect() as conn:
        assert conn.execute(text(GRANTED)).scalar_one() > 50
    engine.dispose()
