"""``inferledger export focus``: the ledger as FOCUS split cost allocation (CSV)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from services.cli.common import ledger_required, settings_of
from services.runtime.stack import local_stack

WHEN = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"])


@click.group()
def export() -> None:
    """Export the ledger for other tools: `export focus` (FinOps FOCUS allocated costs)."""


@export.command("focus")
@click.option("--since", type=WHEN, required=True, help="start of the window, UTC (inclusive)")
@click.option("--until", type=WHEN, required=True, help="end of the window, UTC (exclusive)")
@click.option(
    "--granularity",
    type=click.Choice(["hour", "day"]),
    default=None,
    help="cut the allocated charges' periods at UTC hours or days (default: each billed line's "
    "own period, and provisional charges per resource and day)",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="write the CSV to this file (default: stdout)",
)
@click.option(
    "--tenant",
    default=None,
    help="only this tenant's allocated charges (their sum is then not the origin's)",
)
@click.pass_context
def focus(
    ctx: click.Context,
    since: datetime,
    until: datetime,
    granularity: str | None,
    output: str | None,
    tenant: str | None,
) -> None:
    """Write the ledger as FOCUS data generator-calculated split cost allocation (CSV): each
    billed GPU line, or provisional rate charge where no bill covers a bucket, is an origin
    charge split into allocated charges per tenant and model plus unused capacity (idle),
    summing exactly to it. docs/billing.md, "Exporting allocated costs as FOCUS"."""
    from services.ledger.db import make_engine
    from services.ledger.focusdata import focus_allocation, resource_info
    from services.ledger.focusexport import to_rows, write_csv

    lo, hi = since.replace(tzinfo=UTC), until.replace(tzinfo=UTC)
    if hi <= lo:
        raise click.ClickException("--until must be after --since")
    with local_stack(settings_of(ctx), need_broker=False) as s, ledger_required():
        assert s.database_url
        engine = make_engine(s.database_url)
        try:
            allocated = focus_allocation(engine, s.allocated_charge_categories, lo, hi, granularity)
            resources = resource_info(engine)
        finally:
            engine.dispose()
    rows = to_rows(allocated, resources, tenant)
    if output is None:
        with open(  # stdout as UTF-8 text with the CSV's own line ends
            sys.stdout.fileno(), "w", encoding="utf-8", newline="", closefd=False
        ) as out:
            n = write_csv(rows, out)
    else:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as out:
            n = write_csv(rows, out)
    origins = len({a.origin.charge_id for a in allocated})
    click.echo(f"{n} allocated charges of {origins} origin charges", err=True)
