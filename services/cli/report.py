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
@click.option(
    "--group-by",
    "group_by",
    multiple=True,
    metavar="G[,G...]",
    help="rows per day, week (ISO, from Monday) or month (UTC), tenant, model or resource, in "
    "the order given (repeat it or separate with commas; a period alone is per tenant and "
    "model too; default: per tenant and model). resource reads the journal's daily rollup, "
    "ledger_daily",
)
@click.option("--tenant", default=None, help="only this tenant")
@click.option("--model", default=None, help="only this model")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="first day, UTC")
@click.option(
    "--until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="day after last (exclusive)"
)
@click.option(
    "--include-idle-share",
    "idle_share",
    is_flag=True,
    help="add each row's share of idle GPU cost (v_cost_per_completion_with_idle); idle cost no "
    "tenant used is its own row, so the amounts with idle add up to the ledger's",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]), default="table"
)
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="html: write the page to this file (and print its path) instead of stdout",
)
@click.option(
    "--alerts",
    "with_alerts",
    is_flag=True,
    help="json: an object with the rows under cost_per_completion, plus period, budgets and "
    "recent_alerts (the table shows those whenever budgets exist)",
)
@click.pass_context
def report(
    ctx: click.Context,
    group_by: tuple[str, ...],
    tenant: str | None,
    model: str | None,
    since: Any,
    until: Any,
    idle_share: bool,
    fmt: str,
    output: str | None,
    with_alerts: bool,
) -> None:
    """Cost per completion per tenant and model, or per period, tenant, model or resource
    (from v_cost_per_completion; with the idle share from v_cost_per_completion_with_idle; per
    resource from ledger_daily); then, when budgets exist, their current period
    (v_budget_status) and the latest 20 alerts. docs/report.md says what each column holds.
    --format html: one self-contained page with charts (spend over time, idle, cost per
    completion, GPU busy fraction, provisional versus billed, budgets), to stdout or --output."""
    from services.ledger.budgets import RECENT_ALERTS, budget_status, has_budgets, recent_alerts
    from services.ledger.db import make_engine
    from services.ledger.report import (
        UNPRICED_NOTE,
        ReportError,
        cost_report,
        footnotes,
        no_rows_line,
        period_bounds,
        period_line,
        render,
        report_spec,
        report_title,
        table_rows,
        total_lines,
    )

    if output is not None and fmt != "html":
        raise click.ClickException("--output is for --format html")
    if fmt == "html":
        if group_by or with_alerts:
            raise click.ClickException(
                "--format html has its own groupings and shows budgets and alerts: drop "
                "--group-by and --alerts"
            )
        _html(ctx, tenant, model, day(since), day(until), output)
        return
    if with_alerts and fmt != "json":
        raise click.ClickException(
            "--alerts is for --format json (the table shows budgets and alerts already)"
        )
    try:
        spec = report_spec(group_by, tenant, model, day(since), day(until), idle_share)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    status: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    with local_stack(settings_of(ctx), need_broker=False) as s, ledger_required():
        assert s.database_url
        engine = make_engine(s.database_url)
        try:
            found = cost_report(engine, spec)
            budgets = (fmt == "table" or with_alerts) and has_budgets(engine)
            if budgets:
                status = budget_status(engine, tenant)
                alerts = recent_alerts(engine, tenant)
        finally:
            engine.dispose()
    rows = found.rows
    if with_alerts:
        first, last = period_bounds(found)
        click.echo(
            json.dumps(
                {
                    "period": {
                        "first_day": first and first.isoformat(),
                        "last_day": last and last.isoformat(),
                    },
                    "cost_per_completion": json.loads(render(rows, "json")),
                    "budgets": json.loads(render(status, "json")),
                    "recent_alerts": json.loads(render(alerts, "json")),
                },
                indent=2,
            )
        )
        return
    if fmt != "table":  # stdout is the data alone; what a reader should know goes to stderr
        click.echo(render(rows, fmt, columns=found.columns), nl=fmt == "json")
        if rows:
            click.echo(period_line(found), err=True)
            if any(r["has_unpriced"] for r in rows):
                click.echo(f"has_unpriced = true: {UNPRICED_NOTE}", err=True)
        return
    if rows:
        click.echo(period_line(found))
        shown, numeric = table_rows(found)
        click.echo(render(shown, "table", report_title(spec), numeric=numeric), nl=False)
        for line in total_lines(found) + footnotes(found):
            click.echo(line)
    else:
        click.echo(no_rows_line(spec))
        click.echo(
            "nothing is in the ledger for this selection yet. Streaming processors close a "
            "bucket once event time passes its end plus the allowed lateness; `inferledger run "
            "all --until-idle` closes everything fed so far (beside `up` too)",
            err=True,
        )
    if budgets:
        _section(status, "budgets (current period, UTC)")
        shown_alerts = [
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
        _section(shown_alerts, f"recent alerts (latest {RECENT_ALERTS}, newest first)")


def _html(
    ctx: click.Context,
    tenant: str | None,
    model: str | None,
    since: Any,
    until: Any,
    output: str | None,
) -> None:
    """The self-contained HTML report (services.ledger.htmlreport) of the selection, to
    ``output`` or stdout."""
    from pathlib import Path

    from services.ledger.db import make_engine
    from services.ledger.htmlreport import render_html
    from services.ledger.overview import collect
    from services.ledger.report import ReportError, report_spec

    try:
        spec = report_spec((), tenant, model, since, until, True)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    with local_stack(settings_of(ctx), need_broker=False) as s, ledger_required():
        assert s.database_url
        engine = make_engine(s.database_url)
        try:
            data = collect(engine, spec)
        finally:
            engine.dispose()
    page = render_html(data)
    if output is None:
        click.echo(page, nl=False)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    click.echo(str(path.resolve()))


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
