"""``inferledger ingest events|rates|billing``: publish files to the input topics."""

from __future__ import annotations

import json

import click

from services.cli.common import INPUT_FILE, settings_of, warn_ephemeral
from services.runtime.stack import local_stack


@click.group()
def ingest() -> None:
    """Publish events, rates or bills from files."""


@ingest.command("events")
@click.argument("file", type=INPUT_FILE)
@click.pass_context
def ingest_events_cmd(ctx: click.Context, file: str) -> None:
    """Publish inference events from a JSONL FILE (- for stdin), batched per resource."""
    from services.ingest.files import ingest_events, open_input
    from services.runtime.kafka import ensure_topics

    warn_ephemeral(settings_of(ctx))
    with local_stack(settings_of(ctx), need_database=False) as s:
        ensure_topics(s)
        with open_input(file) as stream:
            summary = ingest_events(s, stream)
    click.echo(json.dumps(summary.as_dict()))


@ingest.command("rates")
@click.argument("file", type=INPUT_FILE)
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv"]), default="auto")
@click.pass_context
def ingest_rates_cmd(ctx: click.Context, file: str, fmt: str) -> None:
    """Publish GPU rates from a JSONL or CSV FILE (- for stdin)."""
    from services.ingest.files import ingest_rates, open_input
    from services.runtime.kafka import ensure_topics

    warn_ephemeral(settings_of(ctx))
    with local_stack(settings_of(ctx), need_database=False) as s:
        ensure_topics(s)
        with open_input(file) as stream:
            summary = ingest_rates(s, stream, fmt)
    click.echo(json.dumps(summary.as_dict()))


@ingest.command("billing")
@click.argument("file", type=INPUT_FILE)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["focus", "jsonl"]),
    default="focus",
    show_default=True,
    help="FOCUS 1.0+ CSV (or .csv.gz), or BillingLine JSONL",
)
@click.option(
    "--cost-column",
    type=click.Choice(["EffectiveCost", "BilledCost", "ListCost", "ContractedCost"]),
    default="EffectiveCost",
    show_default=True,
    help="FOCUS cost column to use",
)
@click.pass_context
def ingest_billing_cmd(ctx: click.Context, file: str, fmt: str, cost_column: str) -> None:
    """Publish billing lines from a FOCUS export or JSONL FILE (- for stdin)."""
    from services.ingest.files import ingest_billing, open_input
    from services.runtime.kafka import ensure_topics

    warn_ephemeral(settings_of(ctx))
    with local_stack(settings_of(ctx), need_database=False) as s:
        ensure_topics(s)
        with open_input(file) as stream:
            summary = ingest_billing(s, stream, fmt, cost_column)
    click.echo(json.dumps(summary, indent=2))
