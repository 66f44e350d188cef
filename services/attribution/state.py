"""Durable attribution state in Postgres: rates, bills and closed buckets of the Book.

The attribution processor publishes a step's allocations, then stores the state that step
changed, then acknowledges the Kafka messages: a crash anywhere in between replays messages
whose entries carry the same deterministic ids, so the ledger never counts twice.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Engine, select

from services.accounting import Book
from services.ledger.db import copy_insert
from services.ledger.schema import attribution_state

Item = tuple[str, str, str, dict[str, Any]]


def save(engine: Engine, items: list[Item]) -> None:
    if not items:
        return
    rows = [[r, k, key, Jsonb(d)] for r, k, key, d in items]
    with engine.begin() as conn:
        copy_insert(
            conn,
            attribution_state.name,
            ("resource_id", "kind", "key", "data"),
            rows,
            "ON CONFLICT (resource_id, kind, key) DO UPDATE SET data = EXCLUDED.data, "
            "updated_at = now()",
        )


def load(engine: Engine, book: Book) -> int:
    """Restore everything stored into ``book``: inputs first, then closed buckets."""
    n = 0
    with engine.connect() as conn:
        for kind in ("rate", "bill", "bucket"):
            rows = conn.execute(
                select(
                    attribution_state.c.resource_id,
                    attribution_state.c.key,
                    attribution_state.c.data,
                ).where(attribution_state.c.kind == kind)
            )
            for resource_id, key, data in rows:
                book.restore(resource_id, kind, key, data)
                n += 1
    return n
