"""DESIGN.md's worked example, fed through the CLI as JSONL into the real broker and Postgres."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine

from services.ledger.db import stored_offsets
from tests.helpers import cli, ledger

DATA = Path(__file__).resolve().parents[1] / "data"
EVENTS = str(DATA / "worked_example_events.jsonl")
RATES = str(DATA / "worked_example_rates.jsonl")


def test_worked_example_lands_exactly_and_reruns_change_nothing(cli_env, settings):
    assert json.loads(cli(cli_env, "ingest", "rates", RATES).stdout)["published"] == 1
    summary = json.loads(cli(cli_env, "ingest", "events", EVENTS).stdout)
    assert summary == {
        "read": 3,
        "published": 3,
        "messages": 1,
        "rejected": 0,
        "rejected_by_reason": {},
    }
    cli(cli_env, "run", "all", "--until-idle")

    rows = ledger(settings.database_url)
    got = sorted((k, t, m, a, c) for k, t, m, a, c in rows.values())
    assert got == sorted(
        [
            ("idle", None, None, Decimal("0.200000000000"), 0),
            ("usage", "acme", "llama-70b", Decimal("0.277992277992"), 1),
            ("usage", "beta", "llama-70b", Decimal("0.083397683398"), 1),
            ("usage", "acme", "llama-8b", Decimal("0.038610038610"), 0),
            ("idle", None, None, Decimal("0.500000000000"), 0),
            ("usage", "acme", "llama-8b", Decimal("0.100000000000"), 1),
        ],
        key=str,
    )

    report = json.loads(cli(cli_env, "report", "--format", "json").stdout)
    by_key = {(r["tenant_id"], r["model"]): r for r in report}
    assert by_key[("acme", "llama-70b")]["amount"] == "0.277992277992"
    assert by_key[("beta", "llama-70b")]["cost_per_completion"] == "0.083397683398"
    assert by_key[("acme", "llama-8b")]["amount"] == "0.138610038610"
    assert by_key[("acme", "llama-8b")]["completions"] == 1
    table = cli(cli_env, "report").stdout
    assert "0.277992" in table and "0.28" in table and "beta" in table  # rounded for reading

    engine = create_engine(settings.database_url)
    offsets = stored_offsets(engine, settings.group("inferledger-ledger"))
    allocations = settings.topic("cost-allocations")
    assert sum(o for (t, _), o in offsets.items() if t == allocations) >= 2

    # the same input again, and another run: the ledger is identical
    cli(cli_env, "ingest", "rates", RATES)
    cli(cli_env, "ingest", "events", EVENTS)
    cli(cli_env, "run", "all", "--until-idle")
    assert ledger(settings.database_url) == rows
    assert "audit passed" in cli(cli_env, "audit").stdout


def test_events_from_stdin_and_rates_from_csv(cli_env, settings, tmp_path):
    csv_path = tmp_path / "rates.csv"
    csv_path.write_text(
        "resource_id,price_per_hour,currency,effective_from,effective_to,source\n"
        "node-1,36.00,USD,2024-01-01T00:00:00Z,2024-01-01T00:02:00Z,contract\n"
    )
    assert json.loads(cli(cli_env, "ingest", "rates", str(csv_path)).stdout)["published"] == 1
    out = cli(cli_env, "ingest", "events", "-", stdin=Path(EVENTS).read_bytes())
    assert json.loads(out.stdout)["published"] == 3
    cli(cli_env, "run", "all", "--until-idle")
    total = sum(a for _, _, _, a, _ in ledger(settings.database_url).values())
    assert total == Decimal("1.2")
