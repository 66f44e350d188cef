"""``inferledger``: one command for every process and task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from services.runtime import logs
from services.runtime.config import BILLING, EVENTS, RATES, Settings, load_settings
from services.runtime.metrics import parse_listen as _listen
from services.runtime.stack import local_stack

if TYPE_CHECKING:
    from services.ingest.dlq import DeadLetter

log = logs.get("inferledger")


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """inferledger: what every LLM completion cost each tenant, idle GPUs included."""
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    ctx.obj = settings


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply the database migrations (alembic upgrade head)."""
    from services.ledger.db import migrate as do_migrate

    with local_stack(_settings(ctx), need_broker=False) as s:
        assert s.database_url
        do_migrate(s.database_url)
        click.echo("database is at the latest revision")


@cli.group()
def ingest() -> None:
    """Publish events, rates or bills from files."""


def _warn_ephemeral(settings: Settings) -> None:
    from services.runtime.stack import running_stack

    if not settings.kafka_bootstrap and not running_stack(settings):
        click.echo(
            "note: no INFERLEDGER_KAFKA_BOOTSTRAP and no `inferledger up` running: "
            "publishing to a broker that stops with this command",
            err=True,
        )


@ingest.command("events")
@click.argument("file")
@click.pass_context
def ingest_events_cmd(ctx: click.Context, file: str) -> None:
    """Publish inference events from a JSONL FILE (- for stdin), batched per resource."""
    from services.ingest.files import ingest_events, open_input
    from services.runtime.kafka import ensure_topics

    _warn_ephemeral(_settings(ctx))
    with local_stack(_settings(ctx), need_database=False) as s:
        ensure_topics(s)
        with open_input(file) as stream:
            summary = ingest_events(s, stream)
    click.echo(json.dumps(summary.as_dict()))


@ingest.command("rates")
@click.argument("file")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv"]), default="auto")
@click.pass_context
def ingest_rates_cmd(ctx: click.Context, file: str, fmt: str) -> None:
    """Publish GPU rates from a JSONL or CSV FILE (- for stdin)."""
    from services.ingest.files import ingest_rates, open_input
    from services.runtime.kafka import ensure_topics

    _warn_ephemeral(_settings(ctx))
    with local_stack(_settings(ctx), need_database=False) as s:
        ensure_topics(s)
        with open_input(file) as stream:
            summary = ingest_rates(s, stream, fmt)
    click.echo(json.dumps(summary.as_dict()))


def input_topics(settings: Settings) -> list[str]:
    return [settings.topic(EVENTS), settings.topic(RATES), settings.topic(BILLING)]


@ingest.command("billing")
@click.argument("file")
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

    _warn_ephemeral(_settings(ctx))
    with local_stack(_settings(ctx), need_database=False) as s:
        ensure_topics(s)
        with open_input(file) as stream:
            summary = ingest_billing(s, stream, fmt, cost_column)
    click.echo(json.dumps(summary, indent=2))


def _run_one(settings: Settings, which: str, until_idle: bool, run_id: str | None) -> None:
    from services.runtime.faustapp import run_until, tune_gc

    if which == "attribution":
        from services.attribution.app import build
    else:
        from services.ledger.writer import build
    app, done = build(settings, run_id)
    tune_gc(settings)
    if settings.metrics_listen:
        from services.runtime.metrics import serve

        counters = (
            app.inferledger_processor.counters  # type: ignore[attr-defined]
            if which == "attribution"
            else app.inferledger_counters  # type: ignore[attr-defined]
        )
        from services.runtime.health import HEALTH, postgres_probe

        if settings.database_url:
            HEALTH.add_probe("postgres", postgres_probe(settings.database_url))
        serve(settings.metrics_listen, which, counters)  # /metrics and /healthz
        log.info("metrics listening", listen=settings.metrics_listen, component=which)
    if settings.profile_dir is None:
        asyncio.run(run_until(app, done if until_idle else None))
        return
    import cProfile

    settings.profile_dir.mkdir(parents=True, exist_ok=True)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(run_until(app, done if until_idle else None))
    finally:
        profiler.disable()
        profiler.dump_stats(str(settings.profile_dir / f"{which}.prof"))


def run_processors(settings: Settings, until_idle: bool, progress: bool = True) -> None:
    """Run attribution and ledger writer as two processes; bounded when ``until_idle``."""
    from services.runtime.kafka import ensure_topics, publish_end_markers

    ensure_topics(settings)
    run_id = None
    if until_idle:
        run_id = uuid.uuid4().hex
        publish_end_markers(settings, input_topics(settings), run_id)
    env = dict(os.environ)
    env["INFERLEDGER_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap or ""
    env["INFERLEDGER_DATABASE_URL"] = settings.database_url or ""
    env["INFERLEDGER_TOPIC_PREFIX"] = settings.topic_prefix
    procs = []
    for n, which in enumerate(("attribution", "ledger")):
        cmd = [sys.executable, "-m", "services.cli.main", "run", which]
        if until_idle:
            cmd += ["--until-idle", "--run-id", run_id or ""]
        if settings.metrics_listen:  # one port per process: attribution, then ledger
            host, port = _listen(settings.metrics_listen)
            env["INFERLEDGER_METRICS_LISTEN"] = f"{host}:{port + n}"
        procs.append((which, subprocess.Popen(cmd, env=dict(env))))
    started = time.monotonic()

    def _stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(sig, _stop)
    try:
        status: Any = None
        if progress and sys.stderr.isatty():
            from rich.console import Console

            status = Console(stderr=True).status("processing")
            status.start()
        failed = []
        while any(p.poll() is None for _, p in procs):
            if status is not None and settings.database_url:
                status.update(
                    f"processing: {_ledger_rows(settings)} ledger rows, "
                    f"{time.monotonic() - started:.0f} s"
                )
            if any(p.poll() not in (None, 0) for _, p in procs):
                break
            time.sleep(0.5)
        if status is not None:
            status.stop()
        failed = [f"{w} exited with {p.returncode}" for w, p in procs if p.poll() not in (None, 0)]
        if failed:
            raise click.ClickException("; ".join(failed))
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.terminate()
        for _, p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def _ledger_rows(settings: Settings) -> int:
    from sqlalchemy import create_engine, text

    assert settings.database_url
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM ledger_entries")).scalar_one())
    except Exception:
        return 0
    finally:
        engine.dispose()


@cli.command()
@click.argument("which", type=click.Choice(["attribution", "ledger", "all"]), default="all")
@click.option("--until-idle", is_flag=True, help="process the bounded input to its end, then exit")
@click.option("--run-id", default=None, help="end-of-input markers to wait for (set by `run all`)")
@click.pass_context
def run(ctx: click.Context, which: str, until_idle: bool, run_id: str | None) -> None:
    """Run processors: attribution, ledger (writer) or all."""
    settings = _settings(ctx)
    need_db = True  # the attribution processor keeps its durable state in Postgres too
    with local_stack(settings, need_database=need_db) as s:
        if which == "all":
            if need_db:
                from services.ledger.db import migrate as do_migrate

                assert s.database_url
                do_migrate(s.database_url)
            run_processors(s, until_idle)
            return
        if until_idle and run_id is None:
            if which == "ledger":
                raise click.UsageError(
                    "`run ledger --until-idle` needs the --run-id of the "
                    "attribution run it follows (or use `run all`)"
                )
            from services.runtime.kafka import ensure_topics, publish_end_markers

            ensure_topics(s)
            run_id = uuid.uuid4().hex
            publish_end_markers(s, input_topics(s), run_id)
        _run_one(s, which, until_idle, run_id)


@cli.command()
@click.option("--tenant", default=None)
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="first day, UTC")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="day after last")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_context
def report(ctx: click.Context, tenant: str | None, since: Any, until: Any, fmt: str) -> None:
    """Cost per completion per tenant and model (from v_cost_per_completion)."""
    from services.ledger.db import make_engine
    from services.ledger.report import cost_per_completion, render

    with local_stack(_settings(ctx), need_broker=False) as s:
        assert s.database_url
        engine = make_engine(s.database_url)
        rows = cost_per_completion(engine, tenant, _day(since), _day(until))
        click.echo(render(rows, fmt, "cost per completion"), nl=False)


@cli.command()
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
    from services.runtime.stack import running_stack

    settings = _settings(ctx)
    if not skip_topics and not settings.kafka_bootstrap and not running_stack(settings):
        # the embedded broker keeps nothing once stopped: there is no input left to compare
        click.echo(
            "no broker is configured or running (`inferledger up`): the input topics cannot "
            "be read, so only the ledger's consistency is checked"
        )
        skip_topics = True
    with local_stack(settings, need_broker=not skip_topics) as s:
        assert s.database_url
        topic = None if skip_topics else scan_input(s)
        engine = make_engine(s.database_url)
        checks = run_audit(engine, accounting_settings(s), s.allocated_charge_categories, topic)
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


def _day(value: Any) -> date | None:
    return None if value is None else value.date()


@cli.command()
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

    run_demo(_settings(ctx), fleet_path, trace_path, limit, html_path)


@cli.group()
def replay() -> None:
    """Replay recorded traffic as a live feed of inference events."""


@replay.command("fleet")
def replay_fleet() -> None:
    """Print the demo fleet description (JSON): a starting point for your own --fleet file."""
    from services.ingest.trace.fleet import default_fleet

    click.echo(json.dumps(default_fleet(), indent=2))


def _start_shift(start: str, first: datetime | None) -> timedelta:

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
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
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
                _warn_ephemeral(_settings(ctx))
                with local_stack(_settings(ctx), need_database=False) as s:
                    from services.runtime.kafka import ensure_topics

                    ensure_topics(s)
                    if rates and first is not None:
                        summary.rates = rp.publish_rates(s, fleet, rp.rental_start(first + shift))
                    rp.to_kafka(s, events, summary, advance)
    except TraceError as exc:
        raise click.ClickException(str(exc)) from None
    summary.wall_seconds = time.monotonic() - started
    click.echo(json.dumps(summary.as_dict()), err=output == "-")


@cli.group()
def dlq() -> None:
    """Dead letters: list what was rejected and why, and send fixed messages back."""


_DLQ_TOPICS = click.Choice(["inference-events", "gpu-rates", "gpu-billing", "cost-allocations"])


def _dlq_records(
    s: Settings, topics: tuple[str, ...], reason: str | None, source: str | None
) -> Iterator[DeadLetter]:
    from services.ingest import dlq as d

    return (r for r in d.read(s, d.dlq_topics(s, topics or None)) if d.matches(r, reason, source))

    return (r for r in d.read(s, d.dlq_topics(s, topics or None)) if d.matches(r, reason, source))


@dlq.command("list")
@click.option("--topic", "topics", type=_DLQ_TOPICS, multiple=True, help="default: all")
@click.option("--reason", default=None, help="only this reason (e.g. invalid, too_late)")
@click.option("--source", default=None, help="only from this component (gateway, ingest, ...)")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most N records")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table")
@click.pass_context
def dlq_list(
    ctx: click.Context,
    topics: tuple[str, ...],
    reason: str | None,
    source: str | None,
    limit: int | None,
    fmt: str,
) -> None:
    """Show dead letters (oldest first) and how many there are per reason."""
    from collections import Counter

    with local_stack(_settings(ctx), need_database=False) as s:
        from services.runtime.kafka import ensure_topics

        ensure_topics(s)
        by_reason: Counter[str] = Counter()
        shown = 0
        if fmt == "table":
            click.echo(
                f"{'at':<32} {'source':<12} {'topic':<18} {'reason':<22} {'bytes':>8}  detail"
            )
        for r in _dlq_records(s, topics, reason, source):
            by_reason[f"{r.topic.removeprefix(s.topic_prefix)}/{r.reason}"] += 1
            if limit is not None and shown >= limit:
                continue
            shown += 1
            if fmt == "jsonl":
                click.echo(json.dumps(r.as_dict()))
                continue
            size = f"{r.record.get('payload_size', '?')}{'T' if r.truncated else ''}"
            click.echo(
                f"{str(r.record.get('rejected_at', ''))[:32]:<32} {r.source[:12]:<12} "
                f"{r.topic.removeprefix(s.topic_prefix)[:18]:<18} {r.reason[:22]:<22} "
                f"{size:>8}  {str(r.record.get('detail', ''))[:100]}"
            )
        click.echo(
            json.dumps({"dead_letters": sum(by_reason.values()), "by_reason": dict(by_reason)}),
            err=True,
        )


@dlq.command("replay")
@click.option("--topic", "topics", type=_DLQ_TOPICS, multiple=True, help="default: all")
@click.option("--reason", default=None, help="only dead letters with this reason")
@click.option("--source", default=None, help="only dead letters from this component")
@click.option("--all", "everything", is_flag=True, help="every dead letter (no filter)")
@click.option(
    "--from-file",
    "from_file",
    default=None,
    help="JSONL of fixed messages (- for stdin): dead-letter records from `dlq list "
    "--format jsonl` with their payload fixed, or plain messages for the one --topic",
)
@click.option(
    "--record",
    "records",
    multiple=True,
    help="only this dead letter, TOPIC:PARTITION:OFFSET (dlq_topic, dlq_partition, dlq_offset "
    "of `dlq list --format jsonl`); repeatable",
)
@click.option(
    "--include-unauthorized",
    is_flag=True,
    help="send the --record dead letters even if the gateway's authorization refuses them now "
    "(unauthenticated, token gone, or out of its scope)",
)
@click.option("--dry-run", is_flag=True, help="validate and report, send nothing")
@click.pass_context
def dlq_replay(
    ctx: click.Context,
    topics: tuple[str, ...],
    reason: str | None,
    source: str | None,
    everything: bool,
    from_file: str | None,
    records: tuple[str, ...],
    include_unauthorized: bool,
    dry_run: bool,
) -> None:
    """Send dead-lettered payloads back to the topic they were rejected from.

    Each payload is validated first: one still invalid, or truncated, is reported and not
    sent. What the gateway dead-lettered is authorized again under the current gateway tokens
    (refused: unauthenticated, unknown_credential, forbidden) unless named with --record and
    --include-unauthorized. Events sent twice are counted once (event ids), and so are rates
    and bills."""
    from services.ingest import dlq as d
    from services.ingest.files import open_input
    from services.runtime.kafka import ensure_topics

    if from_file is None and not (reason or source or everything or records):
        raise click.UsageError(
            "choose what to replay: --reason, --source, --all, --record or --from-file"
        )
    if from_file is not None and len(topics) > 1:
        raise click.UsageError("--from-file takes at most one --topic (for plain messages)")
    if include_unauthorized and (not records or from_file is not None):
        raise click.UsageError("--include-unauthorized needs the dead letters named by --record")
    with local_stack(_settings(ctx), need_database=False) as s:
        ensure_topics(s)
        if from_file is not None:
            with open_input(from_file) as stream:
                result = d.send(s, d.from_file(stream, s, topics[0] if topics else None), dry_run)
        else:
            try:
                named = {d.parse_position(s, r) for r in records} or None
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--record") from None
            chosen = (
                r
                for r in _dlq_records(s, topics, reason, source)
                if named is None or (r.dlq_topic, r.dlq_partition, r.dlq_offset) in named
            )
            result = d.send(s, d.from_records(chosen, include_unauthorized), dry_run)
    for problem in result.problems[:50]:
        click.echo(f"not sent: {problem}", err=True)
    click.echo(json.dumps({**result.as_dict(), "dry_run": dry_run}))


@cli.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """The local stack and all processors, until stopped (Ctrl-C)."""
    from services.ledger.db import migrate as do_migrate

    with local_stack(_settings(ctx), publish_state=True) as s:
        assert s.database_url
        do_migrate(s.database_url)
        click.echo(f"INFERLEDGER_KAFKA_BOOTSTRAP={s.kafka_bootstrap}")
        click.echo(f"INFERLEDGER_DATABASE_URL={s.database_url}")
        with contextlib.suppress(KeyboardInterrupt):
            run_processors(s, until_idle=False, progress=False)


@cli.command()
@click.option("--listen", default=None, help="host:port (default INFERLEDGER_GATEWAY_LISTEN)")
@click.pass_context
def gateway(ctx: click.Context, listen: str | None) -> None:
    """The HTTP ingest gateway: events (JSON, NDJSON, CloudEvents), rates and bills."""
    from aiohttp import web

    from services.ingest.gateway import Gateway
    from services.runtime.kafka import ensure_topics

    _warn_ephemeral(_settings(ctx))
    with local_stack(_settings(ctx), need_database=False) as s:
        ensure_topics(s)
        if not s.gateway_tokens:
            click.echo("note: INFERLEDGER_GATEWAY_TOKENS is empty: all requests get 401", err=True)
        host, port = _listen(listen or s.gateway_listen)
        log.info("gateway listening", host=host, port=port)
        web.run_app(Gateway(s).app(), host=host, port=port, print=None)


@cli.command()
@click.option("--listen", default=None, help="host:port (default INFERLEDGER_PROXY_LISTEN)")
@click.pass_context
def proxy(ctx: click.Context, listen: str | None) -> None:
    """The OpenAI-compatible metering proxy in front of vLLM, SGLang, TGI or TensorRT-LLM."""
    from aiohttp import web

    from services.ingest.proxy import Proxy
    from services.runtime.kafka import ensure_topics

    _warn_ephemeral(_settings(ctx))
    with local_stack(_settings(ctx), need_database=False) as s:
        ensure_topics(s)
        host, port = _listen(listen or s.proxy_listen)
        log.info("proxy listening", host=host, port=port)
        web.run_app(Proxy(s).app(), host=host, port=port, print=None, handler_cancellation=True)


def main() -> None:
    cli(prog_name="inferledger")


if __name__ == "__main__":
    main()
