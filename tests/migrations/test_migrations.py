"""The schema belongs to Alembic: upgrade, downgrade, upgrade again, no drift, append-only."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

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
    assert "v_cost_per_completion" in inspect(engine).get_view_names()
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
