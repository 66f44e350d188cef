"""Alembic environment: the URL comes from the caller or ``INFERLEDGER_DATABASE_URL``."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from services.ledger.schema import metadata

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("INFERLEDGER_DATABASE_URL")
    if not url:
        raise RuntimeError(
            "no database URL: set INFERLEDGER_DATABASE_URL or use `inferledger migrate`"
        )
    return url


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    """``alembic check`` compares the tables of schema.py; the monthly partitions of
    ledger_entries (ledger_entries_y2026m03, ledger_entries_default) are made at run time."""
    partition = reflected and compare_to is None and name.startswith("ledger_entries_")
    return not (type_ == "table" and partition)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=metadata, literal_binds=True, include_object=include_object
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=metadata, include_object=include_object
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
