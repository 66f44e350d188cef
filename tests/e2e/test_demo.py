"""`inferledger demo` as a user runs it (on the test's services, a slice of the trace)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

from sqlalchemy import create_engine, text

from services.ingest.trace.bill import focus_bill
from services.ingest.trace.fleet import Fleet, default_fleet, rental_window, replay
from tests.helpers import cli


def test_demo_prints_the_table_and_writes_the_html_report(cli_env, settings, tmp_path):
    html = tmp_path / "demo.html"
    out = cli(cli_env, "demo", "--limit", "1500", "--html", str(html)).stdout
    assert "cost per completion, per tenant and model" in out
    for tenant in ("acme", "globex", "initech", "umbrella", "hooli"):
        assert tenant in out
    assert "i-0h100spare" in out and "busy_fraction" in out
    assert "HTML report" in out
    assert "provisional (rates) versus billed (FOCUS bill)" in out
    assert "audit: passed" in out
    assert "1 x no resource id" in out  # the tax line stays visible, unallocated
    # the demo's daily budget (all tenants, idle included): the provisional ledger reaches 90 %
    # of it, the bill brings spend down; 15 minutes of data are too few for a forecast
    assert "budget alerts: 2 fired" in out
    assert "  threshold 50 %, spend " in out and "  threshold 80 %, spend " in out
    assert "reached 50 % of" in out and "reached 80 % of" in out and "100 %," not in out
    page = html.read_text()
    # the HTML report is `report --format html`'s, with the demo's words on top
    assert "inferledger demo: what each completion cost" in page
    assert "Idle cost per resource" in page and 'data-chart="spend-USD"' in page
    assert 'data-chart="utilization" data-series="6"' in page  # the six nodes
    assert "Provisional (rates) versus billed" in page and "fleet daily (demo)" in page

    events = replay(Fleet.from_dict(default_fleet()), limit=1500)
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        completions = conn.execute(
            text("SELECT sum(completions) FROM v_cost_per_completion")
        ).scalar_one()
        spare = conn.execute(
            text(
                "SELECT sum(amount), bool_and(tenant_id IS NULL) FROM ledger_entries "
                "WHERE resource_id = 'i-0h100spare'"
            )
        ).one()
        kinds = set(conn.execute(text("SELECT DISTINCT entry_kind FROM ledger_entries")).scalars())
        alerts = conn.execute(
            text(
                "SELECT a.kind, a.threshold, a.spend / a.budget, "
                "bool_and(d.delivered) FILTER (WHERE d.target LIKE 'kafka:%') "
                "FROM budget_alerts a LEFT JOIN alert_deliveries d USING (alert_id) "
                "GROUP BY a.alert_id ORDER BY a.threshold"
            )
        ).all()
        util = conn.execute(
            text("SELECT min(busy_fraction), max(busy_fraction), sum(cost) FROM v_gpu_utilization")
        ).one()
    engine.dispose()
    assert {"usage", "idle", "reconciliation"} <= kinds
    assert [(k, t) for k, t, _, _ in alerts] == [
        ("threshold", Decimal("0.5")),
        ("threshold", Decimal("0.8")),
    ]
    assert all(0.8 <= share < 1 and delivered for _, _, share, delivered in alerts), alerts
    assert util[0] == 0 and 0 < util[1] < 1
    assert completions == sum(e.status == "ok" for e in events)
    assert "audit passed" in cli(cli_env, "audit").stdout
    # the spare node was paid for and never used: its whole rental is idle cost
    start, end = rental_window(events)
    hours = Decimal((end - start).total_seconds()) / 3600
    # billed: the spare node's hours at the committed price (72 % of list), less a 20.00 credit
    bill = focus_bill(Fleet.from_dict(default_fleet()), start, end)
    billed = sum(Decimal(r["EffectiveCost"]) for r in bill if r["ResourceId"] == "i-0h100spare")
    assert hours > 0 and spare[1] is True and spare[0] == billed

    # a second demo on the same, named database would mix two runs' totals: refused at once
    again = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "demo", "--limit", "10"],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 1 and "the demo needs an empty database" in again.stderr
