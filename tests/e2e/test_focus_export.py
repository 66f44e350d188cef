"""``inferledger export focus`` through the CLI: the worked example (provisional), and a FOCUS
bill with a credit (billed): per origin charge the allocated rows sum exactly to its cost."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from tests.e2e.test_billing_scenario import EVENTS, RATE, ev, feed
from tests.helpers import cli, query_rows
from tests.unit.test_focus_export import check_focus

DATA = Path(__file__).resolve().parents[1] / "data"


def read(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def by_tenant(rows: list[dict[str, str]]) -> dict[str | None, Decimal]:
    out: dict[str | None, Decimal] = defaultdict(Decimal)
    for r in rows:
        out[json.loads(r["AllocatedTags"]).get("inferledger/tenant")] += Decimal(r["BilledCost"])
    return dict(out)


def close(got: dict[str | None, Decimal], want: dict[str | None, Decimal], n: int) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert abs(got[k] - want[k]) <= n * Decimal("1e-12"), k


def test_worked_example_exports_its_split(cli_env, settings, tmp_path):
    cli(cli_env, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
    cli(cli_env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
    cli(cli_env, "run", "all", "--until-idle")
    out = tmp_path / "focus.csv"
    done = cli(
        cli_env, "export", "focus", "--since", "2024-01-01", "--until", "2024-01-02",
        "--output", str(out),
    )  # fmt: skip
    assert "allocated charges of 1 origin charges" in done.stderr
    rows = read(out.read_text(encoding="utf-8"))
    check_focus(rows)
    assert by_tenant(rows) == {
        "acme": Decimal("0.416602316602"),
        "beta": Decimal("0.083397683398"),
        None: Decimal("0.700000000000"),
    }
    assert {r["x_OriginBilledCost"] for r in rows} == {"1.200000000000"}
    assert {r["ChargeDescription"] for r in rows} == {"provisional GPU rate charge"}
    # stdout is the same CSV; --tenant keeps one tenant's rows
    assert read(cli(cli_env, "export", "focus", "--since", "2024-01-01", "--until",
                    "2024-01-02").stdout) == rows  # fmt: skip
    beta = read(
        cli(cli_env, "export", "focus", "--since", "2024-01-01", "--until", "2024-01-02",
            "--tenant", "beta").stdout
    )  # fmt: skip
    assert by_tenant(beta) == {"beta": Decimal("0.083397683398")}


FOCUS_BILL = """\
BilledCost,EffectiveCost,ListCost,ContractedCost,BillingCurrency,ChargePeriodStart,\
ChargePeriodEnd,ChargeCategory,ChargeDescription,ProviderName,SkuId,PricingCategory,ResourceId
30.00,30.00,36.00,30.00,USD,2024-01-01 00:00:00,2024-01-01 01:00:00,Usage,p5.48xlarge hour,\
AWS,SKU-P5,Standard,node-1
-3.00,-3.00,0,0,USD,2024-01-01 00:00:00,2024-01-01 01:00:00,Credit,goodwill credit,AWS,\
SKU-P5,Standard,node-1
0.90,0.90,0.90,0.90,USD,2024-01-01 00:00:00,2024-01-01 01:00:00,Tax,tax,AWS,,,node-1
"""


def test_focus_bill_split_sums_exactly_per_origin(cli_env, settings, tmp_path):
    hostile = 'ev"il, tenant'
    events = [*EVENTS, ev("r9", hostile, 'm,"x"/y', 100, 130, 400, 0, 40)]
    feed(cli_env, tmp_path, "rates", [RATE])
    feed(cli_env, tmp_path, "events", events)
    bill = tmp_path / "bill.csv"
    bill.write_text(FOCUS_BILL, encoding="utf-8")
    cli(cli_env, "ingest", "billing", str(bill))
    cli(cli_env, "run", "all", "--until-idle")
    assert "audit passed" in cli(cli_env, "audit").stdout

    out = tmp_path / "focus.csv"
    cli(cli_env, "export", "focus", "--since", "2024-01-01", "--until", "2024-01-02",
        "--output", str(out))  # fmt: skip
    rows = read(out.read_text(encoding="utf-8"))
    check_focus(rows)
    lines = {
        line_id: cost
        for line_id, cost, category in query_rows(
            settings.database_url, "SELECT line_id, cost, charge_category FROM billing_lines"
        )
        if category in ("usage", "credit")
    }
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        sums[r["x_OriginChargeId"]] += Decimal(r["BilledCost"])
        assert r["ResourceId"] == "node-1" and r["ProviderName"] == "AWS"
        assert r["SkuId"] == "SKU-P5" and r["PricingCategory"] == "Standard"
        assert r["x_UnallocatedReason"] == ""  # the ledger holds exactly the bills
    assert sums == lines  # the tax line is no origin: it is not allocated
    assert {r["ChargeCategory"] for r in rows} == {"Usage", "Credit"}

    # per tenant, the split adds up to the ledger's positions to within 1e-12 per origin
    # charge sharing the period (each origin is rounded on its own, to sum exactly to itself)
    ledger = {
        t: a
        for t, a in query_rows(
            settings.database_url, "SELECT tenant_id, sum(amount) FROM ledger_entries GROUP BY 1"
        )
    }
    close(by_tenant(rows), ledger, len(lines))
    assert sum(ledger.values()) == Decimal("27")
    mine = [r for r in rows if json.loads(r["AllocatedTags"]).get("inferledger/tenant") == hostile]
    assert mine and all(
        json.loads(r["AllocatedTags"])["inferledger/model"] == 'm,"x"/y' for r in mine
    )
    hourly = read(
        cli(cli_env, "export", "focus", "--since", "2024-01-01", "--until", "2024-01-02",
            "--granularity", "hour").stdout
    )  # fmt: skip
    close(by_tenant(hourly), ledger, len(lines))
    assert sum(by_tenant(hourly).values()) == Decimal("27")
