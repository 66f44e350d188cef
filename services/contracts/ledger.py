"""The ledger entry's columns: the one ordered definition every other copy derives from.

A ledger entry crosses three representations: the contract (:class:`LedgerEntry` in
``cost-allocations`` messages, and its fast-path twin ``EntryRecord``), the ``ledger_entries``
table (``services.ledger.schema``, created by the migrations) and the rows the writer copies
into it. :data:`LEDGER_ENTRY` names each column once, in order, with its Postgres type, whether
it may be NULL, what kind of value it holds and, for money, the bound the contract enforces so
that Postgres never refuses a value. Unit tests hold the table, the contract, the fast-path
struct and ``schemas/ledger_entry.v1.json`` to it, name for name and type for type; the writer's
rows, the row hash, the audit and the tests' helpers are built from it.

The database columns the contract does not carry (``recorded_at``, filled by Postgres, and
``row_hash``, computed by the writer) are :data:`LEDGER_TABLE_EXTRA`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from services.contracts.models import AMOUNT_LIMIT, BUSY_LIMIT, WORK_LIMIT

Kind = Literal["text", "timestamp", "integer", "count", "money", "text_array"]


@dataclass(frozen=True)
class Column:
    """One column of ``ledger_entries`` that a ledger entry fills."""

    name: str
    sql: str
    """The Postgres type as SQLAlchemy compiles it (``String(64)`` is ``VARCHAR(64)``)."""
    nullable: bool
    kind: Kind
    """``count``: a request or token count, summed into positions; ``integer``: other ints."""
    limit: Decimal | None = None
    """Money only: the value must lie strictly inside ``(-limit, limit)`` (the NUMERIC's)."""


_LEDGER_ENTRY_BASE: tuple[Column, ...] = (
    Column("entry_id", "VARCHAR(64)", False, "text"),
    Column("entry_kind", "TEXT", False, "text"),
    Column("cost_basis", "TEXT", False, "text"),
    Column("tenant_id", "TEXT", True, "text"),
    Column("model", "TEXT", True, "text"),
    Column("resource_id", "TEXT", False, "text"),
    Column("bucket_start", "TIMESTAMP WITH TIME ZONE", False, "timestamp"),
    Column("bucket_seconds", "INTEGER", False, "integer"),
    Column("completions", "INTEGER", False, "count"),
    Column("failed_requests", "INTEGER", False, "count"),
    Column("prompt_tokens", "BIGINT", False, "count"),
    Column("cached_prompt_tokens", "BIGINT", False, "count"),
    Column("completion_tokens", "BIGINT", False, "count"),
    Column("work_units", "NUMERIC(38, 6)", False, "money", WORK_LIMIT),
    Column("busy_seconds", "NUMERIC(20, 6)", False, "money", BUSY_LIMIT),
    Column("amount", "NUMERIC(38, 12)", False, "money", AMOUNT_LIMIT),
    Column("currency", "VARCHAR(3)", False, "text"),
    Column("billing_line_ids", "TEXT[]", False, "text_array"),
)
"""The columns of the first ledger (before migration 0011), in table order."""

LEDGER_ENTRY_GOODPUT: tuple[Column, ...] = (
    Column("completions_within_slo", "INTEGER", False, "count"),
    Column("cancelled_requests", "INTEGER", False, "count"),
    Column("slo_miss_amount", "NUMERIC(38, 12)", False, "money", AMOUNT_LIMIT),
    Column("failed_amount", "NUMERIC(38, 12)", False, "money", AMOUNT_LIMIT),
    Column("cancelled_amount", "NUMERIC(38, 12)", False, "money", AMOUNT_LIMIT),
)
"""Goodput and waste (migration 0011, after ``row_hash`` in the table): completions within
their latency objective (a part of ``completions``), cancelled requests (a part of
``failed_requests``, which counts every request whose status is not ok), and the parts of
``amount`` that paid for ok requests outside their objective, for ``error`` requests and for
cancelled ones. The part that paid for requests within objective is ``amount`` minus the three,
so the four parts add up to ``amount`` exactly. Not in the row hash (its form is frozen)."""

LEDGER_ENTRY: tuple[Column, ...] = _LEDGER_ENTRY_BASE + LEDGER_ENTRY_GOODPUT
"""Every column a ledger entry fills, in the contract's field order (the table's order but for
:data:`LEDGER_TABLE_EXTRA`, which comes before the goodput columns there)."""

LEDGER_ENTRY_COLUMNS: tuple[str, ...] = tuple(c.name for c in LEDGER_ENTRY)
"""The names of :data:`LEDGER_ENTRY`, in order: the fields of ``LedgerEntry``."""

LEDGER_TABLE_EXTRA: tuple[Column, ...] = (
    Column("recorded_at", "TIMESTAMP WITH TIME ZONE", False, "timestamp"),
    Column("row_hash", "VARCHAR(64)", False, "text"),
)
"""The columns of ``ledger_entries`` after the entry's own: filled by Postgres and the writer."""

LEDGER_TABLE: tuple[Column, ...] = _LEDGER_ENTRY_BASE + LEDGER_TABLE_EXTRA + LEDGER_ENTRY_GOODPUT
"""Every column of ``ledger_entries``, in table order."""

LEDGER_TABLE_COLUMNS: tuple[str, ...] = tuple(c.name for c in LEDGER_TABLE)
"""Every column of ``ledger_entries``, in table order."""

LEDGER_COUNTS: tuple[str, ...] = tuple(c.name for c in LEDGER_ENTRY if c.kind == "count")
"""The request and token counts of an entry, in order (what positions sum besides money)."""

LEDGER_MONEY: tuple[Column, ...] = tuple(c for c in LEDGER_ENTRY if c.kind == "money")
"""The money columns, with their bounds."""

entry_values: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*LEDGER_ENTRY_COLUMNS)
"""The values of :data:`LEDGER_ENTRY_COLUMNS` of anything naming its fields as the columns (a
``LedgerEntry``, an ``EntryRecord``), in order: a row of the writer but for its hash."""


def entry_dict(entry: Any) -> dict[str, Any]:
    """A ledger entry (see :data:`entry_values`) as a row dict keyed by column name."""
    return dict(zip(LEDGER_ENTRY_COLUMNS, entry_values(entry), strict=True))
