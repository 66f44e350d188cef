"""``inferledger ingest events|rates|billing|prices``: publish files to the input topics."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from services.cli.common import INPUT_FILE, settings_of, warn_ephemeral
from services.runtime.stack import local_stack


@click.group()
def ingest() -> None:
    """Publish events, rates, bills or prices from files."""


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


@ingest.command("prices")
@click.argument("file", type=INPUT_FILE)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv", "litellm"]),
    default="auto",
    show_default=True,
    help="Price JSONL or CSV (auto: by the first character), or the LiteLLM model price map",
)
@click.option(
    "--effective-from",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"]),
    default=None,
    help="UTC unless an offset is given; litellm: default now; jsonl/csv: for rows without one",
)
@click.pass_context
def ingest_prices_cmd(
    ctx: click.Context, file: str, fmt: str, effective_from: datetime | None
) -> None:
    """Publish prices (what tenants pay per million tokens) from a FILE (- for stdin)."""
    from services.ingest.files import ingest_prices, open_input
    from services.runtime.kafka import ensure_topics

    if effective_from is not None and effective_from.tzinfo is None:
        effective_from = effective_from.replace(tzinfo=UTC)
    warn_ephemeral(settings_of(ctx))
    with local_stack(settings_of(ctx), need_database=False) as s:
        ensure_topics(s)
        with open_input(file) as stream:
            summary = ingest_prices(s, stream, fmt, effective_from)
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
