"""Report tables fit the terminal; csv and json stay exact. ``inferledger report``'s groupings,
its rounding per currency and the lines around its table, without a database."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from services.ledger.report import (
    IDLE_VIEW,
    JOURNAL,
    PLAIN_VIEW,
    UNSHARED_IDLE,
    Report,
    ReportError,
    ReportSpec,
    footnotes,
    group_keys,
    minor_units,
    no_rows_line,
    period_bounds,
    period_line,
    render,
    report_spec,
    report_sql,
    report_title,
    round_money,
    round_unit_cost,
    table_rows,
    total_lines,
    totals,
)

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


# -- inferledger report: groupings, rounding, the table's lines (no database) ----------------


def test_group_keys_default_period_alone_order_commas_and_repeats():
    assert group_keys() == ("tenant_id", "model")
    assert group_keys(["day"]) == ("day", "tenant_id", "model")
    assert group_keys(["week"]) == ("week", "tenant_id", "model")
    assert group_keys(["tenant"]) == ("tenant_id",)
    assert group_keys(["model"]) == ("model",)
    assert group_keys(["resource"]) == ("resource_id",)
    assert group_keys(["month,tenant"]) == ("month", "tenant_id")
    assert group_keys(["tenant", "month"]) == ("tenant_id", "month")  # the order given
    assert group_keys(["resource, Tenant", "model", "tenant"]) == (
        "resource_id",
        "tenant_id",
        "model",
    )
    assert group_keys([",", ""]) == ("tenant_id", "model")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["hour"], "cannot group by 'hour': choose from day, week, month, tenant, model, resource"),
        (["day,week"], "group by one period at a time, not day and week"),
        (["month", "day"], "group by one period at a time, not month and day"),
    ],
)
def test_group_keys_refuses(values, message):
    with pytest.raises(ReportError) as err:
        group_keys(values)
    assert str(err.value) == message


def test_the_spec_says_its_source_and_refuses_what_it_cannot_answer():
    assert report_spec().source == PLAIN_VIEW
    assert report_spec(["day"], include_idle_share=True).source == IDLE_VIEW
    assert report_spec(["resource"]).source == JOURNAL
    with pytest.raises(ReportError, match="--include-idle-share cannot be grouped by resource"):
        report_spec(["resource,tenant"], include_idle_share=True)
    with pytest.raises(ReportError, match="is not after --since"):
        report_spec(since=date(2026, 3, 2), until=date(2026, 3, 2))
    spec = report_spec(["month"], "acme", "m", date(2026, 3, 1), date(2026, 4, 1), True)
    assert spec == ReportSpec(
        ("month", "tenant_id", "model"), "acme", "m", date(2026, 3, 1), date(2026, 4, 1), True
    )


def test_the_sql_reads_the_source_and_truncates_periods_in_utc():
    sql, params = report_sql(report_spec(["week", "model"], since=date(2026, 3, 2)))
    assert "FROM v_cost_per_completion\n" in sql and "ledger_entries" not in sql
    assert "date_trunc('week', day::timestamp)::date AS week" in sql
    assert "day >= :since" in sql and params == {"since": date(2026, 3, 2)}
    sql, _ = report_sql(report_spec(["month"], include_idle_share=True))
    assert (
        "FROM v_cost_per_completion_with_idle" in sql
        and "GROUP BY 1, 2, 3, 4, unshared_idle" in sql
    )
    sql, params = report_sql(report_spec(["resource"], "acme", until=date(2026, 3, 3)))
    assert "FROM ledger_daily" in sql and "tenant_id IS NOT NULL" in sql
    assert "day < :until" in sql
    assert params == {"tenant": "acme", "until": date(2026, 3, 3)}


def test_minor_units_and_money_rounding():
    assert [minor_units(c) for c in ("USD", "EUR", "JPY", "KRW", "KWD", "CLF", "usd")] == [
        2, 2, 0, 0, 3, 4, 2,
    ]  # fmt: skip
    assert round_money(Decimal("0.277992277992"), "USD") == "0.28"
    assert round_money(Decimal("0.125"), "EUR") == "0.13"  # half away from zero, as round()
    assert round_money(Decimal("-0.125"), "EUR") == "-0.13"
    assert round_money(Decimal("-0.001"), "USD") == "0.00"  # never "-0.00"
    assert round_money(Decimal("1234.5"), "JPY") == "1235"
    assert round_money(Decimal("1.2345"), "KWD") == "1.235"
    assert round_money(Decimal("12345678.9"), "USD") == "12345678.90"


def test_unit_costs_keep_six_significant_digits():
    def shown(value: str, currency: str = "USD") -> str:
        return round_unit_cost(Decimal(value), currency)

    assert shown("0.277992277992") == "0.277992"
    assert shown("0.083397683398") == "0.0833977"
    assert shown("0.138610038610") == "0.138610"  # rounded: the zero is a digit
    assert shown("0.100000000000") == "0.10"  # exact: no trailing zeros past the minor unit
    assert shown("0.000012345678") == "0.0000123457"
    assert shown("12.3456789") == "12.3457"
    assert shown("123456.789") == "123456.79"  # never fewer decimals than the currency's
    assert shown("0") == "0.00" and shown("0", "JPY") == "0"
    assert shown("411.5", "JPY") == "411.5" and shown("3429.166666666667", "JPY") == "3429.17"
    assert shown("-0.0125") == "-0.0125"


SPEC = ReportSpec(("day", "tenant_id", "model"), include_idle_share=True)
IDLE_ROWS: list[dict[str, Any]] = [
    {"day": date(2026, 3, 1), "tenant_id": "acme", "model": "m", "currency": "USD",
     "completions": 3, "failed_requests": 0, "prompt_tokens": 300, "completion_tokens": 60,
     "amount": Decimal("0.300000000000"), "cost_per_completion": Decimal("0.100000000000"),
     "cost_per_1k_tokens": Decimal("0.833333333333"), "has_unpriced": True,
     "idle_share": Decimal("0.254999999999"), "amount_with_idle": Decimal("0.554999999999"),
     "cost_per_completion_with_idle": Decimal("0.184999999999"),
     "cost_per_1k_tokens_with_idle": Decimal("1.541666666664"), "unshared_idle": False},
    {"day": date(2026, 3, 1), "tenant_id": None, "model": None, "currency": "USD",
     "completions": 0, "failed_requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
     "amount": Decimal(0), "cost_per_completion": None, "cost_per_1k_tokens": None,
     "has_unpriced": False, "idle_share": Decimal("0.445000000001"),
     "amount_with_idle": Decimal("0.445000000001"), "cost_per_completion_with_idle": None,
     "cost_per_1k_tokens_with_idle": None, "unshared_idle": True},
    {"day": date(2026, 3, 2), "tenant_id": "beta", "model": "m", "currency": "JPY",
     "completions": 2, "failed_requests": 1, "prompt_tokens": 10, "completion_tokens": 2,
     "amount": Decimal("1234.5"), "cost_per_completion": Decimal("617.25"),
     "cost_per_1k_tokens": Decimal("102875"), "has_unpriced": False,
     "idle_share": Decimal("100"), "amount_with_idle": Decimal("1334.5"),
     "cost_per_completion_with_idle": Decimal("667.25"),
     "cost_per_1k_tokens_with_idle": Decimal("111208.333333333333"), "unshared_idle": False},
]  # fmt: skip
IDLE_REPORT = Report(SPEC, list(IDLE_ROWS[0]), IDLE_ROWS, date(2026, 3, 1), date(2026, 3, 2))


def test_table_rows_round_mark_unpriced_and_label_unshared_idle():
    shown, numeric = table_rows(IDLE_REPORT)
    assert list(shown[0]) == [
        "day", "tenant_id", "model", "currency", "completions", "failed_requests",
        "prompt_tokens", "completion_tokens", "amount", "cost_per_completion",
        "cost_per_1k_tokens", "unpriced", "idle_share", "amount_with_idle",
        "cost_per_completion_with_idle", "cost_per_1k_tokens_with_idle",
    ]  # fmt: skip
    assert shown[0] == {
        "day": "2026-03-01", "tenant_id": "acme", "model": "m", "currency": "USD",
        "completions": "3", "failed_requests": "0", "prompt_tokens": "300",
        "completion_tokens": "60", "amount": "0.30", "cost_per_completion": "0.10",
        "cost_per_1k_tokens": "0.833333", "unpriced": "yes", "idle_share": "0.25",
        "amount_with_idle": "0.55", "cost_per_completion_with_idle": "0.185000",
        "cost_per_1k_tokens_with_idle": "1.54167",
    }  # fmt: skip
    assert shown[1]["tenant_id"] == UNSHARED_IDLE and shown[1]["model"] == ""
    assert shown[1]["unpriced"] == "" and shown[1]["cost_per_completion"] == ""
    assert shown[1]["idle_share"] == "0.45"
    assert shown[2]["amount"] == "1235" and shown[2]["cost_per_completion"] == "617.25"
    assert shown[2]["cost_per_1k_tokens_with_idle"] == "111208"
    assert "amount" in numeric and "unpriced" not in numeric and "tenant_id" not in numeric
    table = render(shown, "table", report_title(SPEC), width=300, numeric=numeric)
    assert "cost per completion per day, tenant and model, with idle share" in table
    assert "(unshared idle)" in table and " yes " in table


def test_a_model_only_report_labels_the_unshared_row_in_the_model_column():
    spec = ReportSpec(("model",), include_idle_share=True)
    rows = [{k: v for k, v in r.items() if k not in ("day", "tenant_id")} for r in IDLE_ROWS]
    shown, _ = table_rows(Report(spec, list(rows[0]), rows))
    assert [r["model"] for r in shown] == ["m", UNSHARED_IDLE, "m"]


def test_totals_are_summed_exactly_then_rounded_per_currency():
    assert totals(IDLE_REPORT)["USD"] == {
        "amount": Decimal("0.3"),
        "idle_share": Decimal("0.7"),
        "amount_with_idle": Decimal("1.0"),
        "unshared_idle": Decimal("0.445000000001"),
    }
    assert total_lines(IDLE_REPORT) == [
        "total JPY: amount_with_idle 1335 = amount 1235 + idle_share 100",
        "total USD: amount_with_idle 1.00 = amount 0.30 + idle_share 0.70 "
        "(unshared idle 0.45 of it)",
    ]
    plain = Report(
        ReportSpec(), ["amount", "currency"], [{"amount": Decimal("0.5"), "currency": "EUR"}]
    )
    assert total_lines(plain) == ["total EUR: amount 0.50"]


def test_the_period_line_says_which_end_comes_from_the_data():
    assert period_line(IDLE_REPORT) == (
        "period: 2026-03-01 .. 2026-03-02 (UTC days, both included; the first and last day "
        "with data)"
    )
    asked = Report(ReportSpec(since=date(2026, 3, 1), until=date(2026, 4, 1)), [], [])
    assert period_line(asked) == "period: 2026-03-01 .. 2026-03-31 (UTC days, both included)"
    assert period_bounds(asked) == (date(2026, 3, 1), date(2026, 3, 31))
    half = Report(ReportSpec(since=date(2026, 2, 1)), [], [], date(2026, 3, 1), date(2026, 3, 9))
    assert period_line(half) == (
        "period: 2026-02-01 .. 2026-03-09 (UTC days, both included; the last day with data)"
    )


def test_no_rows_says_what_was_asked():
    assert no_rows_line(ReportSpec()) == "no rows for all tenants, all models, any day"
    assert (
        no_rows_line(
            ReportSpec(tenant="acme", model="m", since=date(2026, 3, 1), until=date(2026, 4, 1))
        )
        == "no rows for tenant acme, model m, UTC days 2026-03-01 .. 2026-03-31 (both included)"
    )
    assert no_rows_line(ReportSpec(since=date(2026, 3, 1))).endswith("UTC days from 2026-03-01 on")
    assert no_rows_line(ReportSpec(until=date(2026, 3, 1))).endswith(
        "UTC days up to 2026-02-28 (included)"
    )


def test_footnotes_explain_unpriced_the_filters_rounding_and_source():
    notes = footnotes(IDLE_REPORT)
    assert notes[0].startswith("unpriced = yes: ") and "missing, not zero" in notes[0]
    assert notes[-1].endswith("read from v_cost_per_completion_with_idle")
    filtered = Report(ReportSpec(tenant="acme", include_idle_share=True), [], IDLE_ROWS[2:])
    assert footnotes(filtered)[0] == (
        "(unshared idle) belongs to no tenant or model: --tenant and --model leave it out"
    )


def test_csv_has_its_header_without_rows_and_plain_booleans():
    columns = ["tenant_id", "amount", "has_unpriced"]
    assert render([], "csv", columns=columns) == "tenant_id,amount,has_unpriced\r\n"
    row = {"tenant_id": "acme", "amount": Decimal("0.100000000001"), "has_unpriced": True}
    assert render([row], "csv", columns=columns).splitlines()[1] == "acme,0.100000000001,true"
    assert json.loads(render([row], "json")) == [
        {"tenant_id": "acme", "amount": "0.100000000001", "has_unpriced": True}
    ]
    assert render([], "json") == "[]"
