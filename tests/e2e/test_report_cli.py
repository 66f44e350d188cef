"""`inferledger report` as a user runs it: on the worked example fed through the pipeline, and
on a hand-made ledger (three UTC days across a week's and a month's end, two models, three
resources, two currencies, a credit, unpriced usage, idle cost shared and unshared), every
grouping in every format, with exact figures; and why it has nothing to show, instead of a
bare "(no rows)" or an SQL traceback."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from tests.helpers import cli, query_rows


def report(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "report"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_unmigrated_database_is_a_one_line_error(empty_db_url):
    out = report(dict(os.environ, INFERLEDGER_DATABASE_URL=empty_db_url))
    assert out.returncode == 1
    assert "no ledger yet: run `inferledger migrate`" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_empty_ledger_says_how_buckets_close(db_url):
    out = report(dict(os.environ, INFERLEDGER_DATABASE_URL=db_url))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "no rows for all tenants, all models, any day\n"
    assert "budgets" not in out.stdout and "alerts" not in out.stdout  # none set: no sections
    assert "run all --until-idle` closes everything fed so far" in out.stderr


def test_audit_and_a_follow_on_an_unmigrated_database_are_one_line_errors(
    empty_db_url, kafka_bootstrap
):
    env = dict(
        os.environ,
        INFERLEDGER_DATABASE_URL=empty_db_url,
        INFERLEDGER_KAFKA_BOOTSTRAP=kafka_bootstrap,
    )
    for args in (
        ["audit", "--skip-topics"],
        ["run", "all", "--until-idle", "--follow", "--timeout", "5"],
    ):
        out = subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 1, (args, out.stderr)
        assert "no ledger yet: run `inferledger migrate`" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_migrate_says_what_it_did_and_a_missing_database_is_a_one_line_error(empty_db_url):
    def migrate(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", "migrate"],
            env=dict(os.environ, INFERLEDGER_DATABASE_URL=url),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    first = migrate(empty_db_url)
    assert first.returncode == 0 and "migrated the database from nothing to" in first.stdout
    again = migrate(empty_db_url)
    assert again.returncode == 0 and "at the latest revision already" in again.stdout
    gone = migrate(empty_db_url.rsplit("/", 1)[0] + "/il_test_no_such_database")
    assert gone.returncode == 1 and "cannot use the database" in gone.stderr
    assert 'database "il_test_no_such_database" does not exist' in gone.stderr
    assert "Traceback" not in gone.stderr


def test_budgets_and_recent_alerts_follow_the_table_and_json_keeps_its_shape(db_url):
    import json
    from datetime import UTC, datetime
    from decimal import Decimal

    from sqlalchemy import create_engine, text

    from services.accounting.budgets import Budget, alert_id, alert_text, period_bounds
    from services.ledger.budgets import create_budget

    engine = create_engine(db_url)
    budget_id = create_budget(
        engine, name="acme daily", tenant_id="acme", period="day", amount=Decimal("10")
    )
    start, end = period_bounds("day", datetime.now(UTC))
    budget = Budget(budget_id, "acme", "day", Decimal("10"), name="acme daily")
    said = alert_text("threshold", budget, start, Decimal("8.5"), threshold=Decimal("0.8"))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO budget_alerts (alert_id, budget_id, tenant_id, kind, subject, "
                "period_start, period_end, threshold, spend, budget, currency, text) VALUES "
                "(:id, :b, 'acme', 'threshold', '0.8', :s, :e, 0.8, 8.5, 10, 'USD', :t)"
            ),
            {"id": alert_id(budget_id, start, "threshold", "0.8"), "b": budget_id, "s": start,
             "e": end, "t": said},
        )  # fmt: skip
    engine.dispose()
    env = dict(os.environ, INFERLEDGER_DATABASE_URL=db_url, COLUMNS="400")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", "report", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    table = run()
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert out.index("no rows for all tenants") < out.index("budgets (current period, UTC)")
    assert "acme daily" in out and budget_id in out
    assert "recent alerts (latest 20, newest first)" in out
    assert "80 %" in out and said in out
    other = run("--tenant", "globex").stdout
    assert "budgets (current period, UTC): none" in other and "newest first): none" in other

    plain = run("--format", "json")
    assert plain.returncode == 0 and json.loads(plain.stdout) == []  # the rows, as before
    full = run("--format", "json", "--alerts")
    assert full.returncode == 0, full.stderr
    doc = json.loads(full.stdout)
    assert set(doc) == {"period", "cost_per_completion", "budgets", "recent_alerts"}
    assert doc["cost_per_completion"] == []
    assert doc["period"] == {"first_day": None, "last_day": None}  # no rows, no --since
    assert [b["budget_id"] for b in doc["budgets"]] == [budget_id]
    assert Decimal(doc["budgets"][0]["spend"]) == 0
    [alert] = doc["recent_alerts"]
    assert alert["kind"] == "threshold" and Decimal(alert["threshold"]) == Decimal("0.8")
    assert alert["text"] == said and alert["tenant_id"] == "acme"
    wrong = run("--format", "csv", "--alerts")
    assert wrong.returncode != 0 and "--alerts is for --format json" in wrong.stderr


# -- the worked example, fed through the pipeline ----------------------------------------------

DATA = Path(__file__).resolve().parents[1] / "data"


def csv_rows(out: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(out)))


def table_rows(out: str) -> list[dict[str, str]]:
    """The rows of the (wide) table printed first in ``out``, by header."""
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    names = [c.strip() for c in header.strip("┃").split("┃")]
    cells = [line for line in lines if line.startswith("│")]
    return [
        dict(zip(names, (c.strip() for c in line.strip("│").split("│")), strict=True))
        for line in cells
    ]


def test_the_worked_example_with_and_without_the_idle_share(cli_env, settings):
    cli(cli_env, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
    cli(cli_env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
    cli(cli_env, "run", "all", "--until-idle")
    env = dict(cli_env, COLUMNS="400")

    table = cli(env, "report")
    out = table.stdout
    assert out.splitlines()[0] == (
        "period: 2024-01-01 .. 2024-01-01 (UTC days, both included; the first and last day "
        "with data)"
    )
    shown = {(r["tenant_id"], r["model"]): r for r in table_rows(out)}
    assert {k: (r["amount"], r["cost_per_completion"], r["cost_per_1k_tokens"], r["unpriced"])
            for k, r in shown.items()} == {
        ("acme", "llama-70b"): ("0.28", "0.277992", "0.231660", ""),
        ("acme", "llama-8b"): ("0.14", "0.138610", "0.396029", ""),
        ("beta", "llama-70b"): ("0.08", "0.0833977", "0.138996", ""),
    }  # fmt: skip
    assert "total USD: amount 0.50" in out and "unpriced = yes" not in out
    assert "read from v_cost_per_completion" in out

    exact = csv_rows(cli(env, "report", "--format", "csv").stdout)
    assert [(r["tenant_id"], r["model"], r["amount"], r["cost_per_completion"],
             r["cost_per_1k_tokens"], r["has_unpriced"]) for r in exact] == [
        ("acme", "llama-70b", "0.277992277992", "0.277992277992", "0.231660231660", "false"),
        ("acme", "llama-8b", "0.138610038610", "0.138610038610", "0.396028681743", "false"),
        ("beta", "llama-70b", "0.083397683398", "0.083397683398", "0.138996138997", "false"),
    ]  # fmt: skip

    idle = json.loads(cli(env, "report", "--include-idle-share", "--format", "json").stdout)
    # every resource-day was used: no unshared row
    assert [(r["tenant_id"], r["model"], r["idle_share"], r["amount_with_idle"],
             r["cost_per_completion_with_idle"], r["cost_per_1k_tokens_with_idle"],
             r["unshared_idle"]) for r in idle] == [
        ("acme", "llama-70b", "0.389189189189", "0.667181467181", "0.667181467181",
         "0.555984555984", False),
        ("acme", "llama-8b", "0.194054054054", "0.332664092664", "0.332664092664",
         "0.950468836183", False),
        ("beta", "llama-70b", "0.116756756757", "0.200154440155", "0.200154440155",
         "0.333590733592", False),
    ]  # fmt: skip
    assert sum(Decimal(r["amount_with_idle"]) for r in idle) == Decimal("1.200000000000")
    [(ledger_total,)] = query_rows(settings.database_url, "SELECT sum(amount) FROM ledger_entries")
    assert ledger_total == Decimal("1.2")

    per_tenant = json.loads(
        cli(
            env, "report", "--include-idle-share", "--group-by", "tenant", "--format", "json"
        ).stdout
    )
    assert [(r["tenant_id"], r["amount"], r["idle_share"], r["amount_with_idle"])
            for r in per_tenant] == [
        ("acme", "0.416602316602", "0.583243243243", "0.999845559845"),
        ("beta", "0.083397683398", "0.116756756757", "0.200154440155"),
    ]  # fmt: skip

    out = cli(env, "report", "--include-idle-share").stdout
    shown = {(r["tenant_id"], r["model"]): r for r in table_rows(out)}
    assert shown[("acme", "llama-70b")]["amount_with_idle"] == "0.67"
    assert shown[("acme", "llama-70b")]["cost_per_completion_with_idle"] == "0.667181"
    assert "total USD: amount_with_idle 1.20 = amount 0.50 + idle_share 0.70" in out

    # the HTML report of the same ledger (the browser test looks at it in Chromium)
    page = cli(env, "report", "--format", "html").stdout
    assert 'data-total="total" data-currency="USD" data-exact="1.200000000000"' in page
    assert 'data-total="idle" data-currency="USD" data-exact="0.700000000000"' in page
    assert 'title="0.667181467181">0.667181</span>' in page  # acme / llama-70b with idle


def test_html_report_to_a_file_or_stdout_with_filters_and_a_hostile_tenant(db_url, tmp_path):
    env = hand_made(db_url)
    hostile = "<script>alert(1)</script>"
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(ENTRY), {
            "id": uuid.uuid4().hex, "kind": "usage", "basis": P, "tenant": hostile,
            "model": "llama-70b", "resource": "node-a", "at": MON, "amount": Decimal("0.01"),
            "currency": "USD", "completions": 1, "prompt": 1, "completion": 1,
        })  # fmt: skip
    engine.dispose()
    target = tmp_path / "out" / "report.html"
    done = run(env, "--format", "html", "--output", str(target))
    assert done.stdout.strip() == str(target.resolve())
    page = target.read_text()
    assert page == run(env, "--format", "html").stdout  # the same page on stdout
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "2026-02-28 .. 2026-03-02 (UTC days, both included" in page
    # two currencies are never added: a chart and a total of each
    for chart in ("spend-USD", "spend-EUR", "idle-USD", "idle-EUR", "cost-per-completion-EUR"):
        assert f'data-chart="{chart}"' in page, chart
    assert 'data-total="total" data-currency="EUR" data-exact="1.400000000000"' in page
    assert 'data-total="total" data-currency="USD" data-exact="2.590000000000"' in page
    assert 'data-unpriced="2"' in page and "<b>unpriced</b>" in page  # node-d's Sunday
    assert "steps of 1 hour" in page  # Saturday 10:00 to Monday 10:01: two days

    acme = run(env, "--format", "html", "--tenant", "acme", "--since", "2026-03-01").stdout
    assert "tenant acme, all models" in acme and "Idle GPU time belongs to no tenant" in acme
    assert "2026-03-01 .. 2026-03-02 (UTC days, both included; the last day with data)" in acme
    assert 'data-total="total" data-currency="USD" data-exact="0.200000000000"' in acme
    assert "(idle)" not in acme and hostile not in acme and "beta" not in acme
    assert "node-b" not in acme  # resources acme did not use are not shown
    assert "steps of 1 hour" in acme  # Sunday 10:00 to Monday 10:01

    for args, said in (
        (["--format", "csv", "--output", "x.html"], "--output is for --format html"),
        (["--format", "html", "--group-by", "day"], "drop --group-by and --alerts"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "report", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode != 0 and said in out.stderr, (args, out.stderr)


# -- a hand-made ledger ------------------------------------------------------------------------

ENTRY = """INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, tenant_id, model,
           resource_id, bucket_start, bucket_seconds, completions, prompt_tokens,
           completion_tokens, amount, currency)
           VALUES (:id, :kind, :basis, :tenant, :model, :resource, :at, 60, :completions,
                   :prompt, :completion, :amount, :currency)"""
SAT = datetime(2026, 2, 28, 10, tzinfo=UTC)  # ISO week of Monday 2026-02-23, February
SAT_LATE = datetime(2026, 2, 28, 23, 59, tzinfo=UTC)  # still Saturday in UTC
SUN = datetime(2026, 3, 1, 10, tzinfo=UTC)  # the same week, March
MON = datetime(2026, 3, 2, 10, tzinfo=UTC)  # the next week
P, U = "provisional", "unpriced"
LEDGER = [
    # kind, basis, tenant, model, resource, bucket, amount, currency, completions
    # node-a, Saturday: acme 0.40 and beta 0.08 (after a credit) of busy cost share 0.30 idle:
    # acme round(0.30 * 0.40 / 0.48, 12) = 0.25, beta 0.05
    ("usage", P, "acme", "llama-70b", "node-a", SAT, "0.30", "USD", 3),
    ("usage", P, "beta", "llama-8b", "node-a", SAT, "0.10", "USD", 1),
    ("reconciliation", P, "beta", "llama-8b", "node-a", SAT, "-0.02", "USD", 0),
    ("idle", P, None, None, "node-a", SAT, "0.20", "USD", 0),
    ("usage", P, "acme", "llama-70b", "node-a", SAT_LATE, "0.10", "USD", 1),
    ("idle", P, None, None, "node-a", SAT_LATE, "0.10", "USD", 0),
    # node-b: nobody's, its idle stays unshared (Saturday 0.25, Monday 0.15)
    ("idle", P, None, None, "node-b", SAT, "0.25", "USD", 0),
    ("idle", P, None, None, "node-b", MON, "0.15", "USD", 0),
    # node-d, Sunday: no rate, so acme's llama-8b usage is unpriced (its cost missing)
    ("usage", U, "acme", "llama-8b", "node-d", SUN, "0", "USD", 2),
    ("idle", U, None, None, "node-d", SUN, "0", "USD", 0),
    # node-a, Sunday: acme alone; Monday: beta alone
    ("usage", P, "acme", "llama-70b", "node-a", SUN, "0.20", "USD", 2),
    ("idle", P, None, None, "node-a", SUN, "0.20", "USD", 0),
    ("usage", P, "beta", "llama-70b", "node-a", MON, "0.50", "USD", 5),
    ("idle", P, None, None, "node-a", MON, "0.50", "USD", 0),
    # node-c, Monday, in euros
    ("usage", P, "acme", "llama-70b", "node-c", MON, "1.00", "EUR", 1),
    ("idle", P, None, None, "node-c", MON, "0.40", "EUR", 0),
]
# per grouping: the rows' keys, then currency, completions, amount and has_unpriced, in order
F, T = "false", "true"
EXPECTED: dict[tuple[str, ...], list[tuple[str, ...]]] = {
    (): [
        ("acme", "llama-70b", "EUR", "1", "1.000000000000", F),
        ("acme", "llama-70b", "USD", "6", "0.600000000000", F),
        ("acme", "llama-8b", "USD", "2", "0.000000000000", T),
        ("beta", "llama-70b", "USD", "5", "0.500000000000", F),
        ("beta", "llama-8b", "USD", "1", "0.080000000000", F),
    ],
    ("day",): [
        ("2026-02-28", "acme", "llama-70b", "USD", "4", "0.400000000000", F),
        ("2026-02-28", "beta", "llama-8b", "USD", "1", "0.080000000000", F),
        ("2026-03-01", "acme", "llama-70b", "USD", "2", "0.200000000000", F),
        ("2026-03-01", "acme", "llama-8b", "USD", "2", "0.000000000000", T),
        ("2026-03-02", "acme", "llama-70b", "EUR", "1", "1.000000000000", F),
        ("2026-03-02", "beta", "llama-70b", "USD", "5", "0.500000000000", F),
    ],
    ("week",): [
        ("2026-02-23", "acme", "llama-70b", "USD", "6", "0.600000000000", F),
        ("2026-02-23", "acme", "llama-8b", "USD", "2", "0.000000000000", T),
        ("2026-02-23", "beta", "llama-8b", "USD", "1", "0.080000000000", F),
        ("2026-03-02", "acme", "llama-70b", "EUR", "1", "1.000000000000", F),
        ("2026-03-02", "beta", "llama-70b", "USD", "5", "0.500000000000", F),
    ],
    ("month",): [
        ("2026-02-01", "acme", "llama-70b", "USD", "4", "0.400000000000", F),
        ("2026-02-01", "beta", "llama-8b", "USD", "1", "0.080000000000", F),
        ("2026-03-01", "acme", "llama-70b", "EUR", "1", "1.000000000000", F),
        ("2026-03-01", "acme", "llama-70b", "USD", "2", "0.200000000000", F),
        ("2026-03-01", "acme", "llama-8b", "USD", "2", "0.000000000000", T),
        ("2026-03-01", "beta", "llama-70b", "USD", "5", "0.500000000000", F),
    ],
    ("model",): [
        ("llama-70b", "EUR", "1", "1.000000000000", F),
        ("llama-70b", "USD", "11", "1.100000000000", F),
        ("llama-8b", "USD", "3", "0.080000000000", T),
    ],
    ("tenant",): [
        ("acme", "EUR", "1", "1.000000000000", F),
        ("acme", "USD", "8", "0.600000000000", T),
        ("beta", "USD", "6", "0.580000000000", F),
    ],
    ("resource",): [
        ("node-a", "USD", "12", "1.180000000000", F),
        ("node-c", "EUR", "1", "1.000000000000", F),
        ("node-d", "USD", "2", "0.000000000000", T),
    ],
    ("resource", "tenant", "model"): [
        ("node-a", "acme", "llama-70b", "USD", "6", "0.600000000000", F),
        ("node-a", "beta", "llama-70b", "USD", "5", "0.500000000000", F),
        ("node-a", "beta", "llama-8b", "USD", "1", "0.080000000000", F),
        ("node-c", "acme", "llama-70b", "EUR", "1", "1.000000000000", F),
        ("node-d", "acme", "llama-8b", "USD", "2", "0.000000000000", T),
    ],
    ("tenant", "month"): [
        ("acme", "2026-02-01", "USD", "4", "0.400000000000", F),
        ("acme", "2026-03-01", "EUR", "1", "1.000000000000", F),
        ("acme", "2026-03-01", "USD", "4", "0.200000000000", T),
        ("beta", "2026-02-01", "USD", "1", "0.080000000000", F),
        ("beta", "2026-03-01", "USD", "5", "0.500000000000", F),
    ],
}
KEYS = {"day": "day", "week": "week", "month": "month", "tenant": "tenant_id",
        "model": "model", "resource": "resource_id"}  # fmt: skip
VALUES = ("currency", "completions", "amount", "has_unpriced")


def hand_made(db_url: str) -> dict[str, str]:
    """The hand-made ledger in ``db_url``; the environment a user's shell would have, in a
    time zone 14 hours ahead of UTC (days, weeks and months stay UTC's), on a wide terminal."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(ENTRY), [
            {"id": uuid.uuid4().hex, "kind": kind, "basis": basis, "tenant": tenant,
             "model": model, "resource": resource, "at": at, "amount": Decimal(amount),
             "currency": currency, "completions": n, "prompt": 100 * n, "completion": 20 * n}
            for kind, basis, tenant, model, resource, at, amount, currency, n in LEDGER
        ])  # fmt: skip
    engine.dispose()
    return dict(
        os.environ, INFERLEDGER_DATABASE_URL=db_url, PGTZ="Pacific/Kiritimati", COLUMNS="400"
    )


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return cli(env, "report", *args)


def group_args(grouping: tuple[str, ...]) -> list[str]:
    return ["--group-by", ",".join(grouping)] if grouping else []


def key_columns(grouping: tuple[str, ...]) -> list[str]:
    keys = [KEYS[g] for g in grouping] or ["tenant_id", "model"]
    return (
        keys + ["tenant_id", "model"]
        if keys[0] in ("day", "week", "month") and len(keys) == 1
        else keys
    )


def test_every_grouping_in_csv_json_and_table_flags_unpriced_rows_and_rounds_only_the_table(
    db_url,
):
    env = hand_made(db_url)
    for grouping, want in EXPECTED.items():
        columns = key_columns(grouping) + list(VALUES)
        what = f"--group-by {','.join(grouping)}"

        done = run(env, *group_args(grouping), "--format", "csv")
        got = csv_rows(done.stdout)
        assert list(got[0]) == [*key_columns(grouping), "currency", "completions",
                                "failed_requests", "prompt_tokens", "completion_tokens",
                                "amount", "cost_per_completion", "cost_per_1k_tokens",
                                "has_unpriced"], what  # fmt: skip
        assert [tuple(r[c] for c in columns) for r in got] == want, what
        assert done.stderr.startswith("period: 2026-02-28 .. 2026-03-02 (UTC days"), what
        assert "has_unpriced = true: " in done.stderr and "missing, not zero" in done.stderr

        data = json.loads(run(env, *group_args(grouping), "--format", "json").stdout)
        assert [
            tuple(str(r[c]).lower() if c == "has_unpriced" else str(r[c]) for c in columns)
            for r in data
        ] == want, what
        assert all(isinstance(r["amount"], str) for r in data)  # exact: never a float

        out = run(env, *group_args(grouping)).stdout
        assert out.splitlines()[0] == (
            "period: 2026-02-28 .. 2026-03-02 (UTC days, both included; the first and last "
            "day with data)"
        ), what
        shown = table_rows(out)
        assert [
            tuple(r[c] for c in key_columns(grouping)) + (r["currency"], r["completions"])
            for r in shown
        ] == [w[: len(columns) - 2] for w in want], what
        # the table rounds amounts to the cent (USD, EUR); csv and json did not
        assert [r["amount"] for r in shown] == [f"{Decimal(w[-2]):.2f}" for w in want], what
        assert [r["unpriced"] for r in shown] == ["yes" if w[-1] == T else "" for w in want]
        assert "unpriced = yes: some of the row's usage was recorded with no rate" in out


def test_resource_rows_read_the_journal_with_the_views_arithmetic(db_url):
    env = hand_made(db_url)
    by_resource = csv_rows(run(env, "--group-by", "resource", "--format", "csv").stdout)
    node_a = by_resource[0]  # 1.18 for 12 completions and 1,440 tokens
    assert node_a["resource_id"] == "node-a"
    assert node_a["cost_per_completion"] == "0.098333333333"
    assert node_a["cost_per_1k_tokens"] == "0.819444444444"
    # summed over resources, the journal's rows are the view's, ratios included
    per_resource = csv_rows(
        run(env, "--group-by", "resource,tenant,model", "--format", "csv").stdout
    )
    summed: dict[tuple[str, ...], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
    for r in per_resource:
        s = summed[(r["tenant_id"], r["model"], r["currency"])]
        s[0] += Decimal(r["amount"])
        s[1] += int(r["completions"])
        s[2] += int(r["prompt_tokens"]) + int(r["completion_tokens"])
    view = csv_rows(run(env, "--format", "csv").stdout)
    assert {(r["tenant_id"], r["model"], r["currency"]): [Decimal(r["amount"]),
            int(r["completions"]), int(r["prompt_tokens"]) + int(r["completion_tokens"])]
            for r in view} == summed  # fmt: skip
    # a UTC day, whatever the session's time zone: the 23:59 bucket is Saturday's
    out = csv_rows(
        run(env, "--group-by", "day,resource", "--until", "2026-03-01", "--format", "csv").stdout
    )
    assert [(r["day"], r["resource_id"], r["completions"], r["amount"]) for r in out] == [
        ("2026-02-28", "node-a", "5", "0.480000000000")
    ]
    out = csv_rows(
        run(env, "--group-by", "resource,day", "--since", "2026-03-02", "--format", "csv").stdout
    )
    assert [(r["resource_id"], r["day"], r["currency"], r["amount"]) for r in out] == [
        ("node-a", "2026-03-02", "USD", "0.500000000000"),
        ("node-c", "2026-03-02", "EUR", "1.000000000000"),
    ]


IDLE_ROWS = [  # tenant, model, currency, amount, idle_share, amount_with_idle, unshared_idle
    ("acme", "llama-70b", "EUR", "1.000000000000", "0.400000000000", "1.400000000000", False),
    ("acme", "llama-70b", "USD", "0.600000000000", "0.450000000000", "1.050000000000", False),
    ("acme", "llama-8b", "USD", "0.000000000000", "0.000000000000", "0.000000000000", False),
    ("beta", "llama-70b", "USD", "0.500000000000", "0.500000000000", "1.000000000000", False),
    ("beta", "llama-8b", "USD", "0.080000000000", "0.050000000000", "0.130000000000", False),
    (None, None, "USD", "0.000000000000", "0.400000000000", "0.400000000000", True),
]


def ledger_totals(
    db_url: str, since: str = "-infinity", until: str = "infinity"
) -> dict[str, Decimal]:
    rows = query_rows(
        db_url,
        "SELECT currency, sum(amount) FROM ledger_entries "
        f"WHERE bucket_start >= '{since}'::timestamp AT TIME ZONE 'UTC' "
        f"AND bucket_start < '{until}'::timestamp AT TIME ZONE 'UTC' GROUP BY currency",
    )
    return {currency: total for currency, total in rows}


def idle_totals(data: list[dict[str, Any]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for r in data:
        out[r["currency"]] += Decimal(r["amount_with_idle"])
    return dict(out)


def test_the_idle_share_adds_up_to_the_ledger_with_unshared_idle_as_its_own_row(db_url):
    env = hand_made(db_url)
    data = json.loads(run(env, "--include-idle-share", "--format", "json").stdout)
    assert [(r["tenant_id"], r["model"], r["currency"], r["amount"], r["idle_share"],
             r["amount_with_idle"], r["unshared_idle"]) for r in data] == IDLE_ROWS  # fmt: skip
    assert [r["has_unpriced"] for r in data] == [False, False, True, False, False, False]
    acme70 = data[1]
    assert acme70["cost_per_completion_with_idle"] == "0.175000000000"  # 1.05 / 6
    assert acme70["cost_per_1k_tokens_with_idle"] == "1.458333333333"  # 1050 / 720
    whole = ledger_totals(db_url)
    assert whole == {"USD": Decimal("2.58"), "EUR": Decimal("1.40")}
    assert idle_totals(data) == whole
    for grouping in (("day",), ("week",), ("month",), ("tenant",), ("model",), ("month", "tenant")):
        got = json.loads(
            run(env, "--include-idle-share", *group_args(grouping), "--format", "json").stdout
        )
        assert idle_totals(got) == whole, grouping
        unshared = [r for r in got if r["unshared_idle"]]
        assert [r["amount_with_idle"] for r in unshared] == (
            ["0.400000000000"] if grouping in (("tenant",), ("model",)) else
            ["0.250000000000", "0.150000000000"]
        ), grouping  # fmt: skip
    # one day: its own ledger total
    day = json.loads(run(env, "--include-idle-share", "--since", "2026-03-01", "--until",
                         "2026-03-02", "--format", "json").stdout)  # fmt: skip
    assert (
        idle_totals(day)
        == ledger_totals(db_url, "2026-03-01", "2026-03-02")
        == {"USD": Decimal("0.40")}
    )

    out = run(env, "--include-idle-share", "--group-by", "month,tenant").stdout
    shown = table_rows(out)
    assert [(r["month"], r["tenant_id"], r["currency"], r["amount"], r["idle_share"],
             r["amount_with_idle"], r["unpriced"]) for r in shown] == [
        ("2026-02-01", "acme", "USD", "0.40", "0.25", "0.65", ""),
        ("2026-02-01", "beta", "USD", "0.08", "0.05", "0.13", ""),
        ("2026-02-01", "(unshared idle)", "USD", "0.00", "0.25", "0.25", ""),
        ("2026-03-01", "acme", "EUR", "1.00", "0.40", "1.40", ""),
        ("2026-03-01", "acme", "USD", "0.20", "0.20", "0.40", "yes"),
        ("2026-03-01", "beta", "USD", "0.50", "0.50", "1.00", ""),
        ("2026-03-01", "(unshared idle)", "USD", "0.00", "0.15", "0.15", ""),
    ]  # fmt: skip
    assert "total EUR: amount_with_idle 1.40 = amount 1.00 + idle_share 0.40" in out
    assert (
        "total USD: amount_with_idle 2.58 = amount 1.18 + idle_share 1.40 "
        "(unshared idle 0.40 of it)"
    ) in out
    assert "read from v_cost_per_completion_with_idle" in out

    # a tenant's report has no unshared idle: it is nobody's
    beta = json.loads(
        run(env, "--include-idle-share", "--tenant", "beta", "--format", "json").stdout
    )
    assert [(r["model"], r["amount_with_idle"], r["unshared_idle"]) for r in beta] == [
        ("llama-70b", "1.000000000000", False),
        ("llama-8b", "0.130000000000", False),
    ]
    out = run(env, "--include-idle-share", "--tenant", "beta").stdout
    assert "(unshared idle) belongs to no tenant or model" in out
    assert "(unshared idle)  " not in out and "│ (unshared idle)" not in out


def test_filters_empty_results_and_refusals(db_url):
    env = hand_made(db_url)
    eight = csv_rows(run(env, "--model", "llama-8b", "--format", "csv").stdout)
    assert [(r["tenant_id"], r["amount"], r["has_unpriced"]) for r in eight] == [
        ("acme", "0.000000000000", "true"),
        ("beta", "0.080000000000", "false"),
    ]
    out = run(env, "--model", "llama-8b", "--tenant", "beta", "--since", "2026-02-28",
              "--until", "2026-03-01").stdout  # fmt: skip
    assert out.splitlines()[0] == "period: 2026-02-28 .. 2026-02-28 (UTC days, both included)"
    assert "unpriced = yes" not in out  # no row of it is unpriced

    nothing = ["--tenant", "acme", "--model", "llama-8b", "--since", "2026-03-02"]
    header = run(env, *nothing, "--format", "csv")  # its \r\n read in text mode: \n
    assert header.stdout == (
        "tenant_id,model,currency,completions,failed_requests,prompt_tokens,"
        "completion_tokens,amount,cost_per_completion,cost_per_1k_tokens,has_unpriced\n"
    )
    grouped = run(env, *nothing, "--group-by", "week,resource", "--format", "csv").stdout
    assert grouped.startswith("week,resource_id,currency,completions,")
    idle = run(env, *nothing, "--include-idle-share", "--format", "csv").stdout
    assert idle.rstrip().endswith(",has_unpriced,idle_share,amount_with_idle,"
                                  "cost_per_completion_with_idle,cost_per_1k_tokens_with_idle,"
                                  "unshared_idle")  # fmt: skip
    assert json.loads(run(env, *nothing, "--format", "json").stdout) == []
    table = run(env, *nothing)
    assert table.stdout == (
        "no rows for tenant acme, model llama-8b, UTC days from 2026-03-02 on\n"
    )

    def refused(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "report", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        return out.stderr

    assert "--include-idle-share cannot be grouped by resource" in refused(
        "--group-by", "resource", "--include-idle-share"
    )
    assert "cannot group by 'hour'" in refused("--group-by", "hour")
    assert "group by one period at a time, not day and month" in refused(
        "--group-by", "day", "--group-by", "month"
    )
    assert "is not after --since" in refused("--since", "2026-03-02", "--until", "2026-03-01")
