"""``inferledger demo``: the whole pipeline on its own stack (services.demo composes it)."""

from __future__ import annotations

import click

from services.cli.common import settings_of


@click.command()
@click.option("--fleet", "fleet_path", default=None, help="fleet description (JSON)")
@click.option("--trace", "trace_path", default=None, help="Azure trace CSV")
@click.option("--limit", type=int, default=None, help="replay only the first N requests")
@click.option("--html", "html_path", default="reports/demo.html", show_default=True)
@click.pass_context
def demo(
    ctx: click.Context,
    fleet_path: str | None,
    trace_path: str | None,
    limit: int | None,
    html_path: str,
) -> None:
    """The main job: replay the real Azure trace on a simulated GPU fleet, end to end."""
    from services.demo.run import run_demo

    run_demo(settings_of(ctx), fleet_path, trace_path, limit, html_path)
