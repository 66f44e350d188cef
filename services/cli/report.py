"""``inferledger migrate``, ``report`` and ``audit``: the database and what is in the ledger."""

from __future__ import annotations

import json
from typing import Any

import click

from services.cli.common import day, ledger_required, settings_of
from services.runtime.stack import local_stack, running_stack


@click.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply the database migrations (alembic upgrade head)."""
    from services.ledger.db import current_revision
    from services.ledger.db import migrate as do_migrate

    with local_stack(settings_of(ctx), need_broker=False) as s, ledger_required():
        assert s.database_url
        before = current_revision(s.database_url)
        do_migrate(s.database_url)
        after = current_revision(s.database_url)
    if before == after:
        click.echo(f"the database was at the latest revision already ({after})")
    else:
        click.echo(f"migrated the database from {before or 'nothing'} to {after}")


@click.command()
@click.option("--tenant", default=None)
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="first day, UTC")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="day after last")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.option(
    "--alerts",
    "with_alerts",
    is_flag=True,
    help="json: an object with the rows under cost_per_completion, plus budgets and "
    "recent_alerts (the table shows those whenever budgets exist)",
)
@click.pass_context
def report(
    ctx: click.Context, tenant: str | None, since: Any, until: Any, fmt: str, with_alerts: bool
) -> None:
    """Cost per completion per tenant and model (from v_cost_per_completion); then, when
    budgets exist, their current period (v_budget_status) and the latest 20 alerts."""
    from services.ledger.budgets import RECENT_ALERTS, budget_status, has_budgets, recent_alerts
    from services.ledger.db import make_engine
    from services.ledger.report import cost_per_completion, render

    if with_alerts and fmt != "json":
        raise click.ClickException(
            "--alerts is for --format json (the table shows budgets and alerts already)"
        )
    status: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    with local_stack(settings_of(ctx), need_broker=False) as s, ledger_required():
        assert s.database_url
        engine = make_engine(s.database_url)
        try:
            rows = cost_per_completion(engine, tenant, day(since), day(until))
            budgets = (fmt == "table" or with_alerts) and has_budgets(engine)
            if budgets:
                status = budget_status(engine, tenant)
                alerts = recent_alerts(engine, tenant)
        finally:
            engine.dispose()
    if with_alerts:
        click.echo(
            json.dumps(
                {
                    "cost_per_completion": json.loads(render(rows, "json")),
                    "budgets": json.loads(render(status, "json")),
                    "recent_alerts": json.loads(render(alerts, "json")),
                },
                indent=2,
            )
        )
        return
    click.echo(render(rows, fmt, "cost per completion"), nl=False)
    if not rows and fmt == "table":
        click.echo(
            "nothing is in the ledger for this selection yet. Streaming processors close a "
            "bucket once event time passes its end plus the allowed lateness; `inferledger run "
            "all --until-idle` closes everything fed so far (beside `up` too)",
            err=True,
        )
    if budgets and fmt == "table":
        _section(status, "budgets (current period, UTC)")
        shown = [
            {
                "fired_at": a["fired_at"].strftime("%Y-%m-%d %H:%M:%S"),
                "kind": a["kind"],
                "tenant_id": a["tenant_id"],
                "threshold_or_forecast": _limit(a),
                "spend": a["spend"],
                "currency": a["currency"],
                "text": a["text"],
            }
            for a in alerts
        ]
        _section(shown, f"recent alerts (latest {RECENT_ALERTS}, newest first)")


def _section(rows: list[dict[str, Any]], title: str) -> None:
    from services.ledger.report import render

    if rows:
        click.echo(render(rows, "table", title), nl=False)
    else:
        click.echo(f"{title}: none")


def _limit(alert: dict[str, Any]) -> str:
    """What an alert was about: the threshold, the forecast, or the anomaly's costs."""
    if alert["kind"] == "threshold" and alert["threshold"] is not None:
        return f"{format((alert['threshold'] * 100).normalize(), 'f')} %"
    if alert["kind"] == "forecast" and alert["forecast_spend"] is not None:
        return f"forecast {alert['forecast_spend']:.2f}"
    if alert["observed"] is not None:
        return f"{alert['observed']:.6f} vs {alert['baseline']:.6f}"
    return ""


@click.command()
@click.option(
    "--skip-topics",
    is_flag=True,
    help="check the ledger's consistency only, without reading the input topics (then a "
    "passing audit does not prove that nothing accepted was lost)",
)
@click.pass_context
def audit(ctx: click.Context, skip_topics: bool) -> None:
    """Check the ledger's invariants, and that nothing accepted was lost; exits non-zero with
    a report when a check fails."""
    from services.attribution.settings import accounting_settings
    from services.ledger.audit import run_audit
    from services.ledger.completeness import scan_input
    from services.ledger.db import make_engine

    settings = settings_of(ctx)
    if not skip_topics and not settings.kafka_bootstrap and not running_stack(settings):
        # the embedded broker keeps nothing once stopped: there is no input left to compare
        click.echo(
            "no broker is configured or running (`inferledger up`): the input topics cannot "
            "be read, so only the ledger's consistency is checked"
        )
        skip_topics = True
    with local_stack(settings, need_broker=not skip_topics) as s, ledger_required():
        assert s.database_url
        topic = None if skip_topics else scan_input(s)
        engine = make_engine(s.database_url)
        try:
            checks = run_audit(engine, accounting_settings(s), s.allocated_charge_categories, topic)
        finally:
            engine.dispose()
    for c in checks:
        click.echo(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        for p in c.problems[:20]:
            click.echo(f"       - {p}")
        if len(c.problems) > 20:
            click.echo(f"       ... and {len(c.problems) - 20} more")
    failed = [c for c in checks if not c.ok]
    if failed:
        raise SystemExit(1)
    if skip_topics:
        click.echo("audit passed (consistency only: the input topics were not read)")
        return
    click.echo("audit passed")
