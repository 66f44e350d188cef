"""The ledger's row hash: a frozen form, the same in Python and in the audit's SQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.contracts.ledger import LEDGER_ENTRY_COLUMNS
from services.ledger.hashing import HASHED_COLUMNS, ROW_HASH_SQL, entry_values, row_hash

AT = datetime(2024, 1, 1, 0, 1, tzinfo=UTC)
Row = tuple[Any, ...]  # the values of LEDGER_ENTRY_COLUMNS, in that order
USAGE: Row = ("e" * 16, "usage", "provisional", "acme", "m", "node-1", AT, 60, 3, 1, 100, 20, 10,
              Decimal("1.5"), Decimal("2.25"), Decimal("0.1234567890125"), "USD",
              ["b1"])  # fmt: skip
IDLE: Row = ("f" * 16, "idle", "billed", None, None, "node-2", AT.replace(minute=2),
             60, 0, 0, 0, 0, 0, Decimal(0), Decimal(0), Decimal("-0"), "EUR", [])  # fmt: skip


@pytest.mark.parametrize(
    ("values", "expected"),
    [  # computed by the writer before the hashing moved here: rows on disk must still verify
        (USAGE, "e701320bc2eb8aa7b1c11bca6f203894d39ab171acbc64ec4e56d1e8263f8992"),
        (IDLE, "04df164cbf2d0b9d9b0299117e49e8c13e0ff95db97280dab5e1ed66c88230bb"),
        (
            ("g" * 16, *IDLE[1:15], Decimal("-0.0000000000004"), *IDLE[16:]),
            "4ef5bdad7ff7c4b2d7c5e815c8f6b255e7fda1345159d0e5073cbdaa23e0e130",
        ),
    ],
)
def test_the_row_hash_form_is_frozen(values, expected):
    assert row_hash(values) == expected
    assert entry_values(*values) == (*values, expected)


def test_columns_outside_the_hash_do_not_change_it():
    other = list(USAGE)
    for name in ("work_units", "busy_seconds", "billing_line_ids"):
        assert name not in HASHED_COLUMNS
        other[LEDGER_ENTRY_COLUMNS.index(name)] = Decimal(7) if name != "billing_line_ids" else []
    assert row_hash(other) == row_hash(USAGE)
    changed = list(USAGE)
    changed[LEDGER_ENTRY_COLUMNS.index("prompt_tokens")] += 1
    assert row_hash(changed) != row_hash(USAGE)


def test_the_sql_hashes_the_same_columns_in_the_same_order():
    assert set(HASHED_COLUMNS) <= set(LEDGER_ENTRY_COLUMNS)
    positions = [ROW_HASH_SQL.index(f"{c}") for c in HASHED_COLUMNS]
    assert positions == sorted(positions)
    assert "coalesce(tenant_id, '')" in ROW_HASH_SQL and "coalesce(model, '')" in ROW_HASH_SQL
    assert "(amount::numeric(38, 12))::text" in ROW_HASH_SQL
