"""Durable attribution state in Postgres: rates, bills and closed buckets of the Book.

The attribution processor publishes a step's allocations, then stores the state that step
changed, then acknowledges the Kafka messages: a crash anywhere in between replays messages
whose entries carry the same deterministic ids, so the ledger never counts twice.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg.types.json import Jsonb
from sqlalchemy import BigInteger, Engine, and_, case, cast, func, or_, select

from services.accounting import Book
from services.ledger.db import copy_insert
from services.ledger.schema import attribution_state

Item = tuple[str, str, str, dict[str, Any]]


def _dumps(data: Any) -> str:
    """JSON for JSONB, with msgspec: psycopg's default ``json.dumps`` was a tenth of the
    attribution processor's time (a closed bucket's state holds all its event ids)."""
    return msgspec.json.encode(data).decode()


def save(engine: Engine, items: list[Item]) -> None:
    if not items:
        return
    rows = [[r, k, key, Jsonb(d, dumps=_dumps)] for r, k, key, d in items]
    with engine.begin() as conn:
        copy_insert(
            conn,
            attribution_state.name,
            ("resource_id", "kind", "key", "data"),
            rows,
            "ON CONFLICT (resource_id, kind, key) DO UPDATE SET data = EXCLUDED.data, "
            "updated_at = now()",
        )


_T = attribution_state.c
_start = case((_T.kind == "bucket", cast(_T.key, BigInteger)))  # keys of buckets are integers


def load_resources(engine: Engine, book: Book, resource_ids: list[str]) -> int:
    """Restore into ``book`` what Postgres holds for these resources: every rate and bill, the
    latest closed bucket and the closed buckets within ``resident_seconds`` of it (older ones
    come back through :func:`load_buckets` when something touches them).

    The attribution processor calls it when a resource first reaches it on a partition it owns:
    at start-up, and when a rebalance hands it a partition another worker had."""
    if not resource_ids:
        return 0
    n = 0
    settings = book.settings
    mine = _T.resource_id.in_(resource_ids)
    with engine.connect() as conn:
        rows = conn.execute(
            select(_T.resource_id, _T.kind, _T.key, _T.data)
            .where(mine, _T.kind.in_(("rate", "bill")))
            .order_by(_T.resource_id, _T.kind, _T.key)
        )
        for resource_id, kind, key, data in rows:
            book.restore(resource_id, kind, key, data)
            n += 1
        last = (
            select(_T.resource_id, func.max(_start).label("last"))
            .where(mine, _T.kind == "bucket")
            .group_by(_T.resource_id)
            .subquery()
        )
        # the latest closed bucket, and those less than resident_seconds before it
        rows = conn.execute(
            select(_T.resource_id, _T.key, _T.data, last.c.last)
            .join(last, last.c.resource_id == _T.resource_id)
            .where(
                _T.kind == "bucket",
                or_(_start == last.c.last, _start > last.c.last - settings.resident_us),
            )
            .order_by(_T.resource_id, _start)
        )
        latest: dict[str, int] = {}
        for resource_id, key, data, newest in rows:
            book.restore(resource_id, "bucket", key, data)
            latest[resource_id] = int(newest)
            n += 1
    W = settings.bucket_us
    cutoffs = {r: (b + W - settings.resident_us) // W * W for r, b in latest.items()}
    for resource_id, cutoff in cutoffs.items():
        book.evicted(resource_id, cutoff)
    return n


def load_buckets(engine: Engine, resource_id: str, starts: list[int]) -> dict[int, dict[str, Any]]:
    """Closed buckets of a resource that the Book evicted from memory (the Book's loader)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(_start, _T.data).where(
                and_(_T.resource_id == resource_id, _T.kind == "bucket"),
                _T.key.in_([str(b) for b in starts]),
            )
        )
        return {int(b): data for b, data in rows}
