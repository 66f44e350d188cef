"""The row hash of a ledger entry: computed by the writer, recomputed in SQL by the audit.

The hash is SHA-256 of an entry's identity, counts and money (:data:`HASHED_COLUMNS`, joined
with ``|``): text as it is (NULL as ""), the bucket start as whole epoch seconds, integers in
decimal, the amount with exactly 12 decimals (as ``NUMERIC(38,12)`` stores it). ``inferledger
audit`` recomputes it in SQL (:data:`ROW_HASH_SQL`, same text form) to prove that no row
changed since it was written. The form is frozen: rows written long ago must still verify, so a
new column of the ledger is not hashed unless the hash gets a version of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from services.contracts.ledger import LEDGER_ENTRY, LEDGER_ENTRY_COLUMNS, Column

HASHED_COLUMNS: tuple[str, ...] = (
    "entry_id",
    "entry_kind",
    "cost_basis",
    "tenant_id",
    "model",
    "resource_id",
    "bucket_start",
    "bucket_seconds",
    "completions",
    "failed_requests",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "amount",
    "currency",
)
"""The columns the row hash covers, in hash order (``work_units``, ``busy_seconds`` and
``billing_line_ids`` are not hashed)."""

_AMOUNT_QUANTUM = Decimal("1e-12")
# wide enough for any amount the column holds; half away from zero, as Postgres rounds NUMERIC
_HASH_CONTEXT = Context(prec=60, rounding=ROUND_HALF_UP)
_COLUMNS = {c.name: c for c in LEDGER_ENTRY}


def _text(value: str | None) -> str:
    return value or ""


def _epoch(value: datetime) -> str:
    return str(int(value.timestamp()))


def _amount(value: Decimal) -> str:
    value = value.quantize(_AMOUNT_QUANTUM, context=_HASH_CONTEXT)
    return "0.000000000000" if value == 0 else format(value, "f")


def _python(column: Column) -> Callable[[Any], str]:
    if column.kind == "text":
        return _text
    if column.kind == "timestamp":
        return _epoch
    if column.kind in ("integer", "count"):
        return str
    if column.name == "amount":
        return _amount
    raise ValueError(f"column {column.name} ({column.kind}) is not hashable")


def _sql(column: Column) -> str:
    name = column.name
    if column.kind == "text":
        return f"coalesce({name}, '')" if column.nullable else name
    if column.kind == "timestamp":
        return f"extract(epoch FROM {name})::bigint::text"
    if column.kind in ("integer", "count"):
        return f"{name}::text"
    if column.name == "amount":
        return f"({name}::numeric(38, 12))::text"
    raise ValueError(f"column {name} ({column.kind}) is not hashable")


_PLAN = tuple(
    (LEDGER_ENTRY_COLUMNS.index(name), _python(_COLUMNS[name])) for name in HASHED_COLUMNS
)

ROW_HASH_SQL = (
    "encode(sha256(convert_to(concat_ws('|', "
    + ", ".join(_sql(_COLUMNS[name]) for name in HASHED_COLUMNS)
    + "), 'UTF8')), 'hex')"
)
"""The row hash of a ``ledger_entries`` row, in SQL (what :func:`row_hash` computes)."""


def row_hash(values: Sequence[Any]) -> str:
    """The row hash of the values of ``LEDGER_ENTRY_COLUMNS`` (in that order)."""
    text = "|".join([fmt(values[i]) for i, fmt in _PLAN])
    return hashlib.sha256(text.encode()).hexdigest()


def entry_values(*values: Any) -> tuple[Any, ...]:
    """The values of ``LEDGER_ENTRY_COLUMNS`` with the row hash appended (a COPY row of the
    writer's ``ENTRY_COLUMNS``)."""
    return (*values, row_hash(values))
