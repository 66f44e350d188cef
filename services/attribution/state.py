"""Durable attribution state in Postgres: rates, bills and closed buckets of the Book, and the
outbox of allocations not yet known to be in Kafka.

The attribution processor stores the state a step changed together with that step's
allocations (the outbox) in one transaction, then publishes the allocations, then deletes them
from the outbox, then commits the consumed offsets to Kafka. A crash anywhere in between either
replays input that the stored state already holds (duplicates, dropped) or republishes outbox
allocations whose entries carry the same deterministic ids (the ledger keeps one copy). A bucket
is never decided twice, so no later decision can differ from the one the ledger kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from psycopg.types.json import Jsonb
from sqlalchemy import BigInteger, Engine, and_, case, cast, func, or_, select, text

from services.accounting import Book
from services.ledger.db import copy_insert
from services.ledger.schema import attribution_outbox, attribution_state

Item = tuple[str, str, str, dict[str, Any]]


def _dumps(data: Any) -> str:
    """JSON for JSONB, with msgspec: psycopg's default ``json.dumps`` was a tenth of the
    attribution processor's time (a closed bucket's state holds all its event ids)."""
    return msgspec.json.encode(data).decode()


def save(
    engine: Engine,
    items: list[Item],
    outbox: list[tuple[str, bytes]] | None = None,
    progress: tuple[str, datetime] | None = None,
    worker_id: str | None = None,
) -> tuple[list[int], set[str]]:
    """Store changed state, the allocations it decided and how far this worker has closed
    buckets (``(worker id, event time)``), in one transaction. Returns the outbox ids of the
    allocations (delete them with :func:`sent` once Kafka has them) and, with ``worker_id``,
    the resources fenced off: another worker has claimed them since (``load_resources``), so
    this worker's state and allocations of theirs are dropped here and must not be published."""
    if not items and not outbox and progress is None:
        return [], set()
    fenced: set[str] = set()
    with engine.begin() as conn:
        if worker_id is not None:
            touched = sorted({r for r, _, _, _ in items} | {r for r, _ in outbox or []})
            # locks this worker's owner rows until commit: a claim waits for this save
            owners = conn.execute(
                text(
                    "SELECT resource_id, worker_id FROM resource_owners "
                    "WHERE resource_id = ANY(:r) ORDER BY 1 FOR SHARE"
                ),
                {"r": touched},
            )
            fenced = {r for r, w in owners if w != worker_id}
            if fenced:
                items = [i for i in items if i[0] not in fenced]
                outbox = [o for o in outbox or [] if o[0] not in fenced]
        rows = [[r, k, key, Jsonb(d, dumps=_dumps)] for r, k, key, d in items]
        ids: list[int] = []
        if rows:  # binary COPY: the JSON goes as it is, nothing escaped
            copy_insert(
                conn,
                attribution_state.name,
                ("resource_id", "kind", "key", "data"),
                rows,
                "ON CONFLICT (resource_id, kind, key) DO UPDATE SET data = EXCLUDED.data, "
                "updated_at = now()",
                types=("text", "text", "text", "jsonb"),
            )
        if outbox:
            # binary parameters (%b): in text format psycopg escapes every byte of every
            # payload into a bytea array literal, in Python (most of this transaction's CPU)
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(
                    "INSERT INTO attribution_outbox (resource_id, payload) "
                    "SELECT * FROM unnest(%b::text[], %b::bytea[]) RETURNING id",
                    ([r for r, _ in outbox], [p for _, p in outbox]),
                )
                ids = [int(i) for (i,) in cursor.fetchall()]
            finally:
                cursor.close()
        if progress is not None:
            conn.execute(
                text(
                    "INSERT INTO attribution_progress (worker_id, closed_through) "
                    "VALUES (:w, :t) ON CONFLICT (worker_id) DO UPDATE "
                    "SET closed_through = EXCLUDED.closed_through, updated_at = now()"
                ),
                {"w": progress[0], "t": progress[1]},
            )
    return ids, fenced


def progress_elsewhere(engine: Engine, worker_id: str) -> int | None:
    """How far the other attribution workers have closed buckets (µs since the epoch)."""
    with engine.connect() as conn:
        value = conn.execute(
            text(
                "SELECT (extract(epoch FROM max(closed_through)) * 1000000)::bigint "
                "FROM attribution_progress WHERE worker_id <> :w"
            ),
            {"w": worker_id},
        ).scalar_one()
    return None if value is None else int(value)


def sent(engine: Engine, ids: list[int]) -> None:
    """Allocations Kafka has acknowledged leave the outbox."""
    if ids:
        with engine.begin() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:  # one binary array parameter, not one bound parameter per id
                cursor.execute(
                    "DELETE FROM attribution_outbox WHERE id = ANY(%b::bigint[])", (ids,)
                )
            finally:
                cursor.close()


def pending(engine: Engine, resource_ids: list[str]) -> list[tuple[int, str, bytes]]:
    """Allocations of these resources stored but maybe never published (a crashed run's)."""
    if not resource_ids:
        return []
    ob = attribution_outbox.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(ob.id, ob.resource_id, ob.payload)
            .where(ob.resource_id.in_(resource_ids))
            .order_by(ob.id)
        )
        return [(int(i), r, bytes(p)) for i, r, p in rows]


_T = attribution_state.c
_start = case((_T.kind == "bucket", cast(_T.key, BigInteger)))  # keys of buckets are integers


def load_resources(
    engine: Engine, book: Book, resource_ids: list[str], worker_id: str | None = None
) -> int:
    """Restore into ``book`` what Postgres holds for these resources: every rate and bill, the
    latest closed bucket and the closed buckets within ``resident_seconds`` of it (older ones
    come back through :func:`load_buckets` when something touches them).

    The attribution processor calls it when a resource first reaches it on a partition it owns:
    at start-up, and when a rebalance hands it a partition another worker had. With
    ``worker_id``, it first claims the resources (``resource_owners``), in the same transaction:
    a worker that had them and still has a decision of theirs on its way to storage is fenced
    off (:func:`save` drops it), so two workers never store two decisions of one bucket."""
    if not resource_ids:
        return 0
    n = 0
    settings = book.settings
    mine = _T.resource_id.in_(resource_ids)
    with engine.begin() as conn:
        if worker_id is not None:  # waits for a save of the old owner that holds the rows
            conn.execute(
                text(
                    "INSERT INTO resource_owners (resource_id, worker_id) "
                    "SELECT unnest(CAST(:r AS text[])), :w ORDER BY 1 "
                    "ON CONFLICT (resource_id) DO UPDATE SET worker_id = EXCLUDED.worker_id, "
                    "claimed_at = now()"
                ),
                {"r": sorted(resource_ids), "w": worker_id},
            )
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
        # older buckets within the late horizon stay in storage, but their event ids go into
        # the Book's index: a reused id is found wherever its first copy lies (only the facts)
        since = (
            settings.late_horizon_seconds * 1_000_000 + settings.lateness_us + settings.bucket_us
        )
        older = conn.execute(
            select(_T.resource_id, _T.key, _T.data["facts"])
            .join(last, last.c.resource_id == _T.resource_id)
            .where(
                _T.kind == "bucket",
                _start != last.c.last,
                _start <= last.c.last - settings.resident_us,
                _start > last.c.last - since,
            )
        )
        for resource_id, key, facts in older:
            book.remember(resource_id, key, {"facts": facts})
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
