"""Engine factory, migrations, and the idempotent batched writes of the ledger writer."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, select, text
from sqlalchemy.dialects.postgresql import insert

from services.contracts import GpuRate, LedgerEntry, Price
from services.contracts.fast import EntryRecord, money
from services.contracts.ledger import LEDGER_ENTRY, LEDGER_ENTRY_COLUMNS, LEDGER_MONEY
from services.contracts.ledger import entry_values as ledger_values
from services.ledger.hashing import entry_values
from services.ledger.schema import (
    billing_lines,
    consumer_offsets,
    counted_event_sets,
    end_markers,
    gpu_rates,
    ledger_entries,
    prices,
    resources,
)

ROOT = Path(__file__).resolve().parents[2]


def make_engine(url: str, **kwargs: Any) -> Engine:
    return create_engine(url, pool_pre_ping=True, **kwargs)


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The Alembic revision the database is at (None: not migrated at all)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def entry_row(e: LedgerEntry) -> tuple[Any, ...]:
    """A contract entry as a COPY row (``ENTRY_COLUMNS``, with its row hash)."""
    return entry_values(*ledger_values(e))


def record_row(e: EntryRecord) -> tuple[Any, ...] | None:
    """A fast-path entry as a COPY row, or None when its money needs the full decoder."""
    values = list(ledger_values(e))
    for i, limit in _MONEY_AT:  # decimal strings on the fast path
        value = money(values[i])
        if value is None or not -limit < value < limit:  # the model's limits
            return None
        values[i] = value
    return entry_values(*values)


def rate_row(r: GpuRate) -> dict[str, Any]:
    row = r.model_dump(exclude={"type"})
    ident = "\x1f".join(
        str(row[k])
        for k in (
            "resource_id",
            "effective_from",
            "effective_to",
            "price_per_hour",
            "currency",
            "source",
        )
    )
    row["rate_id"] = hashlib.sha256(ident.encode()).hexdigest()[:32]
    return row


PRICE_IDENTITY = (
    "tenant_id",
    "model",
    "currency",
    "prompt_per_million",
    "cached_prompt_per_million",
    "completion_per_million",
    "per_request",
    "effective_from",
    "effective_to",
    "source",
)


def price_row(p: Price) -> dict[str, Any]:
    """A price as a ``prices`` row; its id is a hash of its content (as a rate's is), so the
    same price published twice is one row. Money as normalised decimal text: ``"2.50"`` and
    ``"2.5"`` are the same price."""
    row = p.model_dump(exclude={"type"})
    ident = "\x1f".join(
        "" if v is None else format(v.normalize(), "f") if isinstance(v, Decimal) else str(v)
        for v in (row[k] for k in PRICE_IDENTITY)
    )
    row["price_id"] = hashlib.sha256(ident.encode()).hexdigest()[:32]
    return row


ENTRY_COLUMNS = (*LEDGER_ENTRY_COLUMNS, "row_hash")
"""The columns the writer copies into ``ledger_entries``: the entry's and its row hash."""


def _copy_type(sql_type: str) -> str:
    """The type name a binary COPY sends a column's values as."""
    base = sql_type.split("(")[0].strip().upper()
    names = {
        "VARCHAR": "varchar",
        "TEXT": "text",
        "TEXT[]": "text[]",
        "INTEGER": "int4",
        "BIGINT": "int8",
        "NUMERIC": "numeric",
        "TIMESTAMP WITH TIME ZONE": "timestamptz",
    }
    return names[base]


ENTRY_TYPES = (*(_copy_type(c.sql) for c in LEDGER_ENTRY), "varchar")
"""The binary COPY types of :data:`ENTRY_COLUMNS` (``row_hash`` is a VARCHAR(64))."""
_MONEY_AT = tuple(
    (LEDGER_ENTRY_COLUMNS.index(c.name), c.limit) for c in LEDGER_MONEY if c.limit is not None
)
COUNTED_COLUMNS = ("resource_id", "bucket_start", "set_id", "event_ids", "statuses")


def counted_set(
    resource_id: str, bucket_start: datetime, counted: Sequence[Sequence[str]]
) -> tuple[Any, ...]:
    """The events one allocation message counts, as a ``counted_event_sets`` row. The set's id
    is a hash of its content, so the same message written twice is one row."""
    ids = [c[0] for c in counted]
    statuses = [c[1] for c in counted]
    digest = hashlib.sha256("\x1f".join(ids).encode())
    digest.update("\x1e".join(statuses).encode())
    return (resource_id, bucket_start, digest.hexdigest(), ids, statuses)


def copy_insert(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    conflict: str,
    types: Sequence[str] | None = None,
) -> int:
    """COPY rows into a session-local staging table, then one INSERT ... SELECT with
    ``conflict`` (idempotent), in the caller's transaction. Returns the rows inserted.

    Much cheaper than multi-row INSERTs for thousands of rows: no giant statement to build,
    send and parse. With ``types`` (Postgres type names, one per column), the COPY is binary:
    no numbers or times written out as text and parsed again by Postgres."""
    if not rows:
        return 0
    cols = ", ".join(columns)
    stage = f"stage_{table}"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
            f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        cursor.execute(f"TRUNCATE {stage}")
        binary = " (FORMAT BINARY)" if types is not None else ""
        with cursor.copy(f"COPY {stage} ({cols}) FROM STDIN{binary}") as copy:
            if types is not None:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        cursor.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} {conflict}")
        return int(cursor.rowcount)
    finally:
        cursor.close()


_BUCKET_START = ENTRY_COLUMNS.index("bucket_start")
_PARTITIONED: set[tuple[str, date]] = set()
"""(database, month) pairs whose ledger partition this process has made sure of."""


def ensure_partitions(engine: Engine, rows: Sequence[Sequence[Any]]) -> None:
    """Make sure ``ledger_entries`` has the month partitions these entry rows go to (migration
    0008), in a short transaction of its own: creating a partition locks the whole table for a
    moment, which should not happen inside a batch. Each month is asked for once per process.
    Without this, rows of a new month would land in ``ledger_entries_default`` (still counted,
    only slower to read)."""
    url = engine.url.render_as_string(hide_password=True)
    months = {
        (url, date(s.year, s.month, 1))
        for s in (row[_BUCKET_START].astimezone(UTC) for row in rows)
    } - _PARTITIONED
    if not months:
        return
    with engine.begin() as conn:
        for _, month in sorted(months):
            conn.execute(text("SELECT inferledger_ledger_partition(:m)"), {"m": month})
    _PARTITIONED.update(months)


def write_batch(engine: Engine, group: str, batch: Any) -> int:
    """Insert a batch idempotently and store the consumed offsets, in one transaction.

    ``batch`` has ``entries`` (rows from :func:`entry_row`), ``rates``, ``bills``, ``counted``
    (rows from :func:`counted_set`) and ``offsets``. Returns how many ledger rows were new.
    """
    written = 0
    if batch.entries:
        ensure_partitions(engine, batch.entries)
    with engine.begin() as conn:
        if batch.entries:
            # the entries' daily rollup (ledger_daily) is added to by the table's trigger, in
            # this transaction, from the rows really inserted
            written += copy_insert(
                conn,
                ledger_entries.name,
                ENTRY_COLUMNS,
                batch.entries,
                "ON CONFLICT (entry_id, bucket_start) DO NOTHING",
                ENTRY_TYPES,
            )
        if batch.counted:
            copy_insert(
                conn,
                counted_event_sets.name,
                COUNTED_COLUMNS,
                batch.counted,
                "ON CONFLICT DO NOTHING",
            )
        if batch.bills:
            brows = [b.model_dump(exclude={"type"}) for b in batch.bills]
            conn.execute(insert(billing_lines).on_conflict_do_nothing(), brows)
        if batch.rates:
            _write_rates(conn, batch.rates)
        new_prices = getattr(batch, "prices", None)
        if new_prices:
            prows = [price_row(p) for p in new_prices]
            conn.execute(insert(prices).on_conflict_do_nothing(index_elements=["price_id"]), prows)
        markers = getattr(batch, "marked", None)  # those on cost-allocations: see writer
        if markers:
            mrows = [{"run_id": r, "topic": t, "partition": p} for t, p, r in markers]
            conn.execute(insert(end_markers).on_conflict_do_nothing(), mrows)
        if batch.offsets:
            orows = [
                {"consumer_group": group, "topic": t, "partition": p, "next_offset": o}
                for (t, p), o in sorted(batch.offsets.items())
            ]
            ins = insert(consumer_offsets)
            conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["consumer_group", "topic", "partition"],
                    set_={
                        "next_offset": ins.excluded.next_offset,
                        "updated_at": ins.excluded.updated_at,
                    },
                ),
                orows,
            )
    return written


def _write_rates(conn: Connection, rates: Sequence[GpuRate]) -> None:
    rrows = [rate_row(r) for r in rates]
    conn.execute(insert(gpu_rates).on_conflict_do_nothing(index_elements=["rate_id"]), rrows)
    fields = ("provider", "instance_type", "gpu_model", "gpu_count", "region")
    res_rows = list(
        {
            r["resource_id"]: {"resource_id": r["resource_id"], **{k: r[k] for k in fields}}
            for r in rrows
        }.values()
    )
    ins = insert(resources)
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=["resource_id"], set_={k: ins.excluded[k] for k in fields}
        ),
        res_rows,
    )


def stored_offsets(engine: Engine, group: str) -> dict[tuple[str, int], int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                consumer_offsets.c.topic,
                consumer_offsets.c.partition,
                consumer_offsets.c.next_offset,
            ).where(consumer_offsets.c.consumer_group == group)
        )
        return {(t, p): o for t, p, o in rows}
