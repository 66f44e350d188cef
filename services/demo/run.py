"""``inferledger demo``: the whole pipeline on the embedded default, from a fresh machine."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.accounting.budgets import period_bounds
from services.attribution.settings import accounting_settings
from services.contracts import Price, dumps
from services.ingest.files import batch_events, ingest_billing
from services.ingest.trace.azure import TRACE
from services.ingest.trace.bill import focus_bill, write_focus_csv
from services.ingest.trace.fleet import (
    DEFAULT_FLEET_FILE,
    Fleet,
    default_fleet,
    rates,
    rental_window,
    replay,
)
from services.ledger.audit import run_audit
from services.ledger.budgets import create_budget, recent_alerts
from services.ledger.completeness import scan_input
from services.ledger.db import make_engine, migrate
from services.ledger.htmlreport import render_html
from services.ledger.overview import collect
from services.ledger.progress import (
    ledger_rows,
    ledger_total,
    progress_line,
    unallocated_summary,
)
from services.ledger.report import (
    ReportSpec,
    cost_per_completion,
    fleet_summary,
    provisional_vs_billed,
    render,
    waste_per_tenant,
)
from services.ledger.rounding import round_money
from services.runtime import logs
from services.runtime.config import EVENTS, PRICES, RATES, Settings
from services.runtime.kafka import ensure_topics, make_producer
from services.runtime.stack import local_stack, recreate_database
from services.runtime.supervise import run_processors

log = logs.get(__name__)
DEMO_DB = "inferledger_demo"
BUDGET_SHARE = Decimal("0.9")
"""The demo's budget: the provisional ledger reaches this share of it (50 % and 80 % fire)."""


def demo_budget_amount(fleet_rates: list[Any], start: datetime, end: datetime) -> Decimal:
    """A daily budget for the whole fleet (all tenants, idle included) that the provisional
    ledger crosses at 50 and 80 % but not 100 %: the rental cost of the fleet on the window's
    first UTC day (list price times hours, the provisional ledger's total for that day) over
    :data:`BUDGET_SHARE`, rounded up to the cent. The bill (a committed price below list, and a
    credit) brings spend down, so 100 % is never reached."""
    day_start, day_end = period_bounds("day", start)
    hours = Decimal(int((min(end, day_end) - max(start, day_start)).total_seconds())) / 3600
    cost = sum((Decimal(r.price_per_hour) for r in fleet_rates), Decimal(0)) * hours
    return max((cost / BUDGET_SHARE).quantize(Decimal("0.01"), "ROUND_CEILING"), Decimal("0.01"))


#: what the demo's tenants pay: the LiteLLM list prices of hosted versions of its models
#: (docs/demo.md#margin); hosted APIs are far cheaper than a mostly idle rented fleet
DEMO_PRICES = Path(DEFAULT_FLEET_FILE).with_name("demo_prices.jsonl")


def margin_per_tenant(engine: Any) -> list[dict[str, Any]]:
    """Revenue, cost with the idle share and margin per tenant and currency (v_tenant_margin)."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "SELECT tenant_id, currency, sum(revenue) AS revenue, sum(cost_with_idle) AS "
            "cost_with_idle, sum(margin_with_idle) AS margin_with_idle, round(sum("
            "margin_with_idle) * 100 / nullif(sum(revenue), 0), 1) AS margin_pct_with_idle "
            "FROM v_tenant_margin GROUP BY tenant_id, currency ORDER BY tenant_id, currency"
        )).mappings()]  # fmt: skip


def print_alerts(engine: Any) -> int:
    """The alerts the run fired, oldest first: kind, threshold, spend and text, one a line."""
    order = {"threshold": 0, "forecast": 1, "anomaly": 2}
    alerts = sorted(
        recent_alerts(engine, limit=100),
        key=lambda a: (a["fired_at"], order[a["kind"]], a["threshold"] or 0, a["alert_id"]),
    )
    click.echo(f"budget alerts: {len(alerts)} fired")
    for a in alerts:
        if a["kind"] == "threshold":
            what = f"threshold {format((a['threshold'] * 100).normalize(), 'f')} %"
        elif a["kind"] == "forecast":
            what = f"forecast {a['forecast_spend']:.2f} {a['currency']}"
        else:
            what = f"anomaly {a['observed']} vs {a['baseline']} {a['currency']}"
        click.echo(f"  {what}, spend {a['spend']:.2f} {a['currency']}: {a['text']}")
    return len(alerts)


def write_report(engine: Any, path: Path, summary: dict[str, Any]) -> Path:
    """The demo's HTML report: ``inferledger report --format html`` of the whole ledger, with a
    line on the workload and the provisional total before the bill."""
    cur = str(summary["currency"])
    notes = [
        f"{summary['events']:,} requests of the Azure LLM inference trace 2023 (code), replayed "
        "on a simulated GPU fleet, then priced again by its FOCUS bill. Provisional total "
        f"{round_money(summary['provisional_total'], cur)} {cur}; after reconciliation with the "
        f"bill {round_money(summary['total_cost'], cur)} {cur}.",
        'Trace: Azure Public Dataset, "Azure LLM inference trace 2023" (CC BY 4.0), Patel et '
        "al., ISCA 2024.",
    ]
    data = collect(
        engine, ReportSpec(), title="inferledger demo: what each completion cost", notes=notes
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path.resolve()


def run_demo(
    settings: Settings,
    fleet_path: str | None,
    trace_path: str | None,
    limit: int | None,
    html_path: str,
) -> None:
    started = time.monotonic()
    fleet = Fleet.load(fleet_path) if fleet_path else Fleet.from_dict(default_fleet())
    trace = Path(trace_path) if trace_path else TRACE
    own_db = settings.database_url is None
    with local_stack(settings) as s:
        assert s.database_url
        if own_db:  # the embedded default gets a fresh demo database every run
            url = make_url(s.database_url).set(database=DEMO_DB).render_as_string(False)
            recreate_database(url)
            s = s.model_copy(update={"database_url": url})
        assert s.database_url
        click.echo(
            f"broker {s.kafka_bootstrap}, database {make_url(s.database_url).database}", err=True
        )
        migrate(s.database_url)
        if not own_db:  # a database the user named: the demo's totals assume it starts empty
            rows = ledger_rows(s)
            if rows:
                raise click.ClickException(
                    f"the demo needs an empty database, and {make_url(s.database_url).database} "
                    f"holds {rows} ledger entries: name a new database in "
                    "INFERLEDGER_DATABASE_URL, or unset it (the demo then recreates its own, "
                    f"{DEMO_DB})"
                )
        ensure_topics(s)

        if fleet.slos and not s.slos:  # the fleet's latency objectives, unless set otherwise
            os.environ["INFERLEDGER_SLOS"] = json.dumps(fleet.slos)  # (the processors' too)
            s = s.model_copy(update={"slos": fleet.slos})
        assert s.database_url
        events = replay(fleet, trace, limit)
        start, end = rental_window(events)
        fleet_rates = rates(fleet, start, end)
        # a budget the workload crosses, set before anything is processed (as `budget set` does)
        amount = demo_budget_amount(fleet_rates, start, end)
        engine = make_engine(s.database_url)
        create_budget(
            engine,
            name="fleet daily (demo)",
            tenant_id=None,
            period="day",
            amount=amount,
            currency=fleet.currency,
            include_idle_share=True,
        )
        click.echo(
            f"budget: {amount} {fleet.currency} a day for all tenants, idle included "
            "(alerts at 50, 80 and 100 %)",
            err=True,
        )
        producer = make_producer(s, compression_type="gzip")
        try:
            for rate in fleet_rates:
                producer.send(s.topic(RATES), key=rate.resource_id, value=dumps(rate))
            for line in DEMO_PRICES.read_text().splitlines():  # the demo's price list
                price = Price.model_validate_json(line)
                producer.send(s.topic(PRICES), key=price.model, value=dumps(price))
            messages = 0
            for resource, value, _ in batch_events(
                sorted(events, key=lambda e: e.finished_at), s.max_batch_events, s.max_message_bytes
            ):
                producer.send(s.topic(EVENTS), key=resource, value=value)
                messages += 1
            producer.flush(60)
        finally:
            producer.close(10)
        click.echo(
            f"published {len(events)} events of {trace.name} in {messages} batches and "
            f"{len(fleet_rates)} rates ({len(fleet.nodes)} nodes, {start:%H:%M}-"
            f"{end:%H:%M} UTC)",
            err=True,
        )

        run_processors(s, until_idle=True, progress=progress_line)
        provisional_total = ledger_total(engine)
        click.echo(
            f"provisional ledger complete: {provisional_total:.2f} {fleet.currency}", err=True
        )

        # hours later the cloud bill arrives: FOCUS export, another price, a credit, a tax line
        bill_path = write_focus_csv(
            focus_bill(fleet, start, end), Path(html_path).parent / "demo-bill.focus.csv"
        )
        with bill_path.open("rb") as fh:
            billing = ingest_billing(s, fh, "focus", "EffectiveCost")
        click.echo(
            f"ingested FOCUS bill {bill_path}: {billing['published']} lines, "
            f"{billing['by_charge_category']}",
            err=True,
        )
        run_processors(s, until_idle=True, progress=progress_line)
        table = cost_per_completion(engine)
        nodes = fleet_summary(engine)
        click.echo(render(table, "table", "cost per completion, per tenant and model"))
        click.echo(render(nodes, "table", "fleet: cost, busy fraction and idle cost per node"))
        waste = waste_per_tenant(engine)
        click.echo(
            render(
                waste,
                "table",
                "goodput and waste per tenant: failed, cancelled and objective-missing cost",
            )
        )
        recon = provisional_vs_billed(engine)
        click.echo(render(recon, "table", "provisional (rates) versus billed (FOCUS bill)"))
        unallocated = unallocated_summary(engine)
        click.echo(f"unallocated billing lines: {unallocated}")
        checks = run_audit(
            engine, accounting_settings(s), s.allocated_charge_categories, scan_input(s)
        )
        click.echo(
            "audit: "
            + (
                "passed"
                if all(c.ok for c in checks)
                else "FAILED: " + "; ".join(c.name for c in checks if not c.ok)
            )
        )
        print_alerts(engine)
        click.echo(render(margin_per_tenant(engine), "table", "margin per tenant (demo prices)"))
        total = sum((n["cost"] for n in nodes), Decimal(0))
        idle = sum((n["idle_cost"] or Decimal(0) for n in nodes), Decimal(0))
        completions = sum(r["completions"] for r in table)
        summary: dict[str, Any] = {
            "provisional_total": provisional_total,
            "events": len(events),
            "completions": completions,
            "total_cost": total,
            "idle_cost": idle,
            "idle_share": (idle / total) if total else Decimal(0),
            "currency": fleet.currency,
            "seconds": time.monotonic() - started,
        }
        click.echo(
            f"fleet total {total:.2f} {fleet.currency}, idle {idle:.2f} "
            f"({summary['idle_share']:.1%}); provisional was {provisional_total:.2f}; "
            f"{completions} completions; "
            f"{summary['seconds']:.1f} s end to end"
        )
        out = write_report(engine, Path(html_path), summary)
        click.echo(f"HTML report: {out}")
        engine.dispose()
