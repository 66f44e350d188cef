"""One definition of the ledger entry's columns (services.contracts.ledger): the table, the
contract, the fast path, the JSON Schema and the writer's rows all match it exactly."""

from __future__ import annotations

import json

import msgspec
from sqlalchemy.dialects import postgresql

from services.contracts import LedgerEntry
from services.contracts.fast import EntryRecord
from services.contracts.ledger import (
    LEDGER_COUNTS,
    LEDGER_ENTRY,
    LEDGER_ENTRY_COLUMNS,
    LEDGER_MONEY,
    LEDGER_TABLE,
    LEDGER_TABLE_COLUMNS,
    LEDGER_TABLE_EXTRA,
    entry_dict,
)
from services.contracts.schemas import SCHEMAS
from services.ledger.db import ENTRY_COLUMNS, entry_row
from services.ledger.schema import ledger_entries

ENTRY = LedgerEntry.model_validate(
    {
        "entry_id": "u" * 16,
        "entry_kind": "usage",
        "cost_basis": "provisional",
        "tenant_id": "acme",
        "model": "m",
        "resource_id": "node-1",
        "bucket_start": "2024-01-01T00:00:00Z",
        "bucket_seconds": 60,
        "completions": 2,
        "amount": "1.25",
        "currency": "USD",
        "billing_line_ids": ["b1"],
    }
)


def test_the_table_has_exactly_the_defined_columns_and_types():
    table = [(c.name, c.type.compile(dialect=postgresql.dialect()), c.nullable)
             for c in ledger_entries.columns]  # fmt: skip
    defined = [(c.name, c.sql, c.nullable) for c in LEDGER_TABLE]
    assert set(LEDGER_TABLE) == set(LEDGER_ENTRY) | set(LEDGER_TABLE_EXTRA)
    assert table == defined
    assert tuple(c.name for c in ledger_entries.columns) == LEDGER_TABLE_COLUMNS


def test_the_contract_and_the_fast_path_have_the_defined_fields_in_order():
    assert tuple(LedgerEntry.model_fields) == LEDGER_ENTRY_COLUMNS
    assert set(EntryRecord.__struct_fields__) == set(LEDGER_ENTRY_COLUMNS)
    for column in LEDGER_ENTRY:  # a column that may be NULL is a field that may be left out
        if column.nullable:
            assert not LedgerEntry.model_fields[column.name].is_required(), column.name


def test_the_json_schema_has_the_defined_properties():
    schema = json.loads((SCHEMAS / "ledger_entry.v1.json").read_text())
    assert set(schema["properties"]) == set(LEDGER_ENTRY_COLUMNS)
    nullable = {c.name for c in LEDGER_ENTRY if c.nullable}
    assert not nullable & set(schema["required"])
    for column in LEDGER_MONEY:  # money is a decimal string on the wire
        prop = schema["properties"][column.name]
        assert prop.get("type") == "string" or "anyOf" in prop, column.name


def test_money_bounds_are_the_contracts():
    for column in LEDGER_MONEY:
        assert column.limit is not None
        metadata = LedgerEntry.model_fields[column.name].metadata
        bounds = {getattr(m, "gt", None) for m in metadata} | {
            getattr(m, "lt", None) for m in metadata
        }
        assert {-column.limit, column.limit} <= bounds, column.name


def test_rows_are_built_from_the_definition():
    assert (*LEDGER_ENTRY_COLUMNS, "row_hash") == ENTRY_COLUMNS
    row = entry_row(ENTRY)
    assert dict(zip(ENTRY_COLUMNS, row, strict=True)) == {**entry_dict(ENTRY), "row_hash": row[-1]}
    assert entry_dict(ENTRY) == ENTRY.model_dump(exclude={"type"})
    assert LEDGER_COUNTS == (
        "completions",
        "failed_requests",
        "prompt_tokens",
        "cached_prompt_tokens",
        "completion_tokens",
        "completions_within_slo",
        "cancelled_requests",
    )
    decoded = msgspec.json.decode(ENTRY.model_dump_json(), type=EntryRecord)
    assert entry_dict(decoded).keys() == entry_dict(ENTRY).keys()
