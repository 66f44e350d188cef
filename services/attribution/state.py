"""Durable attribution state in Postgres: rates, bills and closed buckets of the Book.

The attribution processor publishes a step's allocations, then stores the state that step
changed, then acknowledges the Kafka messages: a crash anywhere in between replays messages
whose entries carry the same deterministic ids, so the ledger never counts twice.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg.types.json import Jsonb
from sqlalchemy import BigInteger, Engine, and_, case, cast, func, or_, select, tuple_

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


def load(engine: Engine, book: Book) -> int:
    """Restore into ``book`` every rate and bill, each resource's latest closed bucket and the
    closed buckets within ``resident_seconds`` of the latest; older ones stay in Postgres and
    come back through :func:`load_buckets` when something touches them."""
    n = 0
    settings = book.settings
    with engine.connect() as conn:
        for kind in ("rate", "bill"):
            rows = conn.execute(select(_T.resource_id, _T.key, _T.data).where(_T.kind == kind))
            for resource_id, key, data in rows:
                book.restore(resource_id, kind, key, data)
                n += 1
        latest = dict(
            conn.execute(
                select(_T.resource_id, func.max(_start))
                .where(_T.kind == "bucket")
                .group_by(_T.resource_id)
            ).all()
        )
        if not latest:
            return n
        cutoff = max(latest.values()) + settings.bucket_us - settings.resident_us
        cutoff -= cutoff % settings.bucket_us
        rows = conn.execute(
            select(_T.resource_id, _T.key, _T.data).where(
                _T.kind == "bucket",
                or_(
                    _start >= cutoff,
                    tuple_(_T.resource_id, _start).in_(list(latest.items())),
                ),
            )
        )
        for resource_id, key, data in rows:
            book.restore(resource_id, "bucket", key, data)
            n += 1
    for resource_id in latest:
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
