"""``inferledger top``: the pipeline live in the terminal, for the operator without Grafana.

Each refresh scrapes the processors' /metrics (:mod:`services.runtime.scrape`) and reads the
ledger's last hour (:mod:`services.ledger.recent`) into a :class:`Snapshot`, which
:mod:`services.cli.topview` renders. Where the processors are: ``--metrics URL`` (repeatable),
else those of a running ``inferledger up`` (its stack.json), else INFERLEDGER_METRICS_LISTEN (one
port per processor from it, as ``run all`` gives them)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from services.cli.common import settings_of
from services.cli.topview import Snapshot, render
from services.runtime.config import Settings

NO_LEDGER = "this database has no ledger yet (run `inferledger migrate`)"


def endpoints(settings: Settings, given: Sequence[str]) -> tuple[dict[str, str], str]:
    """The /metrics URLs to scrape (URL -> component, "" where unknown) and where they came
    from."""
    from services.runtime.scrape import listen_urls, metrics_url
    from services.runtime.stack import running_metrics
    from services.runtime.supervise import COMPONENTS

    if given:
        return {metrics_url(u): "" for u in given}, "--metrics"
    running = running_metrics(settings)
    if running:
        return {u: c for c, u in running.items()}, "`inferledger up` (stack.json)"
    if settings.metrics_listen:
        urls = listen_urls(settings.metrics_listen, COMPONENTS)
        return {u: c for c, u in urls.items()}, "INFERLEDGER_METRICS_LISTEN"
    return {}, ""


def database_url(settings: Settings) -> str:
    """INFERLEDGER_DATABASE_URL, else a running `up`'s database, else the local default (this
    command starts no Postgres and creates no database)."""
    from services.runtime.stack import LOCAL_DB, LOCAL_PG, running_stack

    if settings.database_url:
        return settings.database_url
    running = (running_stack(settings) or {}).get("database_url")
    return running or f"postgresql+psycopg://postgres@{LOCAL_PG}:5432/{LOCAL_DB}"


def spend_problem(exc: Exception) -> str:
    """One line for a database that cannot answer (never a traceback on the screen)."""
    import psycopg
    from sqlalchemy.exc import OperationalError, ProgrammingError

    if isinstance(exc, ProgrammingError) and isinstance(exc.orig, psycopg.errors.UndefinedTable):
        return NO_LEDGER
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).strip().splitlines() if line.strip()]
    first = lines[-1] if isinstance(exc, OperationalError) and lines else (lines or [""])[0]
    return f"cannot read the ledger: {first or type(exc).__name__}"


class Gatherer:
    """Scrapes and the ledger query, one :class:`Snapshot` per call."""

    def __init__(self, urls: Mapping[str, str], db_url: str, source: str, interval: float) -> None:
        from sqlalchemy import create_engine

        from services.runtime.scrape import Tracker

        self.urls, self.source, self.interval = list(urls), source, interval
        self.names = {u: c for u, c in urls.items() if c}
        self.tracker = Tracker()
        self.timeout = max(0.5, min(2.0, interval))
        self.engine = create_engine(
            db_url,
            pool_pre_ping=True,
            pool_size=1,
            connect_args={"connect_timeout": 2, "options": "-c statement_timeout=5000"},
        )

    def __call__(self) -> Snapshot:
        from sqlalchemy.exc import SQLAlchemyError

        from services.ledger.recent import last_hour_spend
        from services.runtime.scrape import scrape

        view = self.tracker.update(scrape(self.urls, self.timeout))
        try:
            spend, problem = last_hour_spend(self.engine), None
        except (SQLAlchemyError, OSError) as exc:
            spend, problem = None, spend_problem(exc)
        return Snapshot(view, spend, problem, self.source, self.interval, self.names)

    def close(self) -> None:
        self.engine.dispose()


@click.command()
@click.option(
    "--metrics",
    "metrics",
    multiple=True,
    metavar="URL",
    help="a processor's /metrics (host:port or URL; repeatable); default: those of a running "
    "`up`, else INFERLEDGER_METRICS_LISTEN",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="seconds between refreshes (rates are over this interval)",
)
@click.option("--once", is_flag=True, help="print one snapshot as plain text and exit")
@click.pass_context
def top(ctx: click.Context, metrics: tuple[str, ...], interval: float, once: bool) -> None:
    """The pipeline live: events/s in, entries/s out, lag, watermark age, dead letters,
    health, and the last hour's spend per tenant. Ctrl-C exits."""
    settings = settings_of(ctx)
    urls, source = endpoints(settings, metrics)
    gather = Gatherer(urls, database_url(settings), source, interval)
    try:
        if once:
            _once(gather, interval)
        else:
            _live(gather, interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C: a clean exit
    finally:
        gather.close()


def _once(gather: Gatherer, interval: float) -> None:
    """Two scrapes ``interval`` apart (the rates need both), printed once, plain."""
    from rich.console import Console

    gather()
    time.sleep(interval)
    snapshot = gather()
    console: Any = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    console.print(render(snapshot))


def _live(gather: Gatherer, interval: float) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console(highlight=False)
    with Live(render(gather()), console=console, auto_refresh=False, screen=False) as live:
        due = time.monotonic()
        while True:
            due += interval  # refreshes keep their pace, whatever a gathering took
            time.sleep(max(0.0, due - time.monotonic()))
            live.update(render(gather()), refresh=True)
