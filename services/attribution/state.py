"""Durable attribution state in Postgres: rates, bills and closed buckets of the Book.

The attribution processor publishes a step's allocations, then stores the state that step
changed, then acknowledges the Kafka messages: a crash anywhere in between replays messages
whose entries carry the same deterministic ids, so the ledger never counts twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert

from services.accounting import Book
from services.ledger.schema import attribution_state

Item = tuple[str, str, str, dict[str, Any]]


def save(engine: Engine, items: list[Item]) -> None:
    if not items:
        return
    rows = [{"resource_id": r, "kind": k, "key": key, "data": d} for r, k, key, d in items]
    stmt = insert(attribution_state)
    stmt = stmt.on_conflict_do_update(
        index_elements=["resource_id", "kind", "key"],
        set_={"data": stmt.excluded.data, "updated_at": stmt.excluded.updated_at},
    )
    with engine.begin() as conn:
        for i in range(0, len(rows), 2000):
            conn.execute(stmt, rows[i : i + 2000])


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
