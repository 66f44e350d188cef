"""``inferledger replay``: recorded traffic (the Azure trace on a fleet) as a live feed."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta

import click

from services.cli.common import INPUT_FILE, settings_of, warn_ephemeral
from services.runtime import logs
from services.runtime.stack import local_stack

log = logs.get("inferledger")


@click.group()
def replay() -> None:
    """Replay recorded traffic as a live feed of inference events."""


@replay.command("fleet")
def replay_fleet() -> None:
    """Print the demo fleet description (JSON): a starting point for your own --fleet file."""
    from services.ingest.trace.fleet import default_fleet

    click.echo(json.dumps(default_fleet(), indent=2))


def _start_shift(start: str, first: datetime | None) -> timedelta:
    """How far ``--start`` (trace, now or an RFC 3339 time) moves the first arrival."""
    if start == "trace" or first is None:
        return timedelta(0)
    if start == "now":
        at = datetime.now(UTC)
    else:
        try:
            at = datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(
                "trace, now or an RFC 3339 time", param_hint="--start"
            ) from None
        if at.tzinfo is None:
            raise click.BadParameter("the time needs a UTC offset", param_hint="--start")
    return at - first


@replay.command("azure-trace")
@click.argument("file", type=INPUT_FILE)
@click.option("--fleet", "fleet_path", default=None, help="fleet JSON (default: the demo fleet)")
@click.option("--seed", default=None, help="replaces the fleet's seed")
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="times real time (60: an hour of trace per minute); 0: as fast as possible",
)
@click.option(
    "--start",
    default="trace",
    show_default=True,
    help="trace: keep the trace's timestamps; now: move the first arrival to now; or a time",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="first N requests only")
@click.option(
    "--id-prefix",
    default=None,
    help="event ids are <prefix>-<row> (default: trace name, seed and start shift)",
)
@click.option(
    "--rates/--no-rates",
    default=True,
    show_default=True,
    help="publish each node's price as a rate from the rental's start",
)
@click.option(
    "--output",
    default=None,
    help="write the events as JSONL to this file (- for stdout) instead of sending them",
)
@click.pass_context
def replay_azure_trace(
    ctx: click.Context,
    file: str,
    fleet_path: str | None,
    seed: str | None,
    speed: float,
    start: str,
    limit: int | None,
    id_prefix: str | None,
    rates: bool,
    output: str | None,
) -> None:
    """Replay an Azure LLM inference trace FILE on a fleet, as the fleet would report it.

    Each request is placed on a node serving its model and reported when it finishes;
    service time: first token after 0.02 s + uncached prompt tokens / prefill_tps, then
    completion tokens / decode_tps (per model, from the fleet file). Deterministic: the
    same trace, fleet and seed give the same events."""
    from dataclasses import replace
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from services.ingest.trace import replay as rp
    from services.ingest.trace.azure import TraceError
    from services.ingest.trace.fleet import Fleet, FleetError, default_fleet

    try:
        fleet = Fleet.load(fleet_path) if fleet_path else Fleet.from_dict(default_fleet())
        if seed is not None:
            fleet = replace(fleet, seed=seed)
        trace = Path(file)
        total, first = rp.scan(trace, limit)
    except (FleetError, TraceError) as exc:
        raise click.ClickException(str(exc)) from None
    shift = _start_shift(start, first)
    summary = rp.ReplaySummary()
    started = time.monotonic()
    events = rp.paced(rp.trace_events(fleet, trace, limit, shift, id_prefix), speed)
    bar = Progress(
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        disable=not sys.stderr.isatty(),
        console=None,
    )
    task = bar.add_task("replay", total=total)
    last_log = [time.monotonic()]

    def advance() -> None:
        bar.advance(task)
        now = time.monotonic()
        if now - last_log[0] >= 10 or summary.events == total:
            last_log[0] = now
            log.info("replay progress", events=summary.events, of=total)

    try:
        with bar:
            if output is not None:
                with click.open_file(output, "wb") as out:
                    rp.to_file(out, events, summary, advance)
            else:
                warn_ephemeral(settings_of(ctx))
                with local_stack(settings_of(ctx), need_database=False) as s:
                    from services.runtime.kafka import ensure_topics

                    ensure_topics(s)
                    if rates and first is not None:
                        summary.rates = rp.publish_rates(s, fleet, rp.rental_start(first + shift))
                    rp.to_kafka(s, events, summary, advance)
    except TraceError as exc:
        raise click.ClickException(str(exc)) from None
    summary.wall_seconds = time.monotonic() - started
    click.echo(json.dumps(summary.as_dict()), err=output == "-")
