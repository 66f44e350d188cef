"""Report tables fit the terminal; csv and json stay as they were."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from services.ledger.report import render

ROWS = [
    {
        "tenant_id": "globex",
        "model": "qwen2.5-coder-32b",
        "currency": "USD",
        "completions": 1234,
        "failed_requests": 12,
        "prompt_tokens": 2345678,
        "completion_tokens": 123456,
        "amount": Decimal("123.4567891234"),
        "cost_per_completion": Decimal("0.100051692969"),
        "cost_per_1k_tokens": Decimal("0.050012345678"),
    },
    {
        "tenant_id": "acme",
        "model": "llama-3.1-70b",
        "currency": "USD",
        "completions": 34,
        "failed_requests": 0,
        "prompt_tokens": 45678,
        "completion_tokens": 3456,
        "amount": Decimal("3.4567891234"),
        "cost_per_completion": Decimal("0.101670268335"),
        "cost_per_1k_tokens": None,
    },
]


@pytest.mark.parametrize("width", [40, 60, 80, 100, 110, 120, 130, 160, 200, 300])
def test_a_table_fits_the_width_and_never_splits_a_model_name(width):
    out = render(ROWS, "table", "cost per completion", width=width)
    assert max(len(line) for line in out.splitlines()) <= width
    for name in ("qwen2.5-coder-32b", "llama-3.1-70b", "globex", "acme"):
        assert name in out


def test_a_wide_terminal_gets_the_full_table():
    out = render(ROWS, "table", "cost per completion", width=200)
    assert "cost_per_completion" in out and "0.100051692969" in out
    assert "┃ tenant_id ┃" in out


def test_the_default_width_is_the_terminals(monkeypatch):
    monkeypatch.setenv("COLUMNS", "90")
    out = render(ROWS, "table", "cost per completion")
    assert max(len(line) for line in out.splitlines()) <= 90


def test_csv_and_json_do_not_depend_on_the_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    csv = render(ROWS, "csv")
    assert csv.splitlines()[0] == ",".join(ROWS[0])
    assert csv.splitlines()[1].startswith("globex,qwen2.5-coder-32b,USD,1234,12,")
    data = json.loads(render(ROWS, "json"))
    assert data[0]["amount"] == "123.4567891234" and data[1]["cost_per_1k_tokens"] is None


def test_no_rows():
    assert render([], "table", "x") == "(no rows)\n"
