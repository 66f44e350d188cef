"""``inferledger run`` and ``inferledger up``: the processors, bounded or streaming."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Any

import click

from services.cli.common import ledger_required, require_broker, settings_of
from services.runtime import logs
from services.runtime.config import Settings
from services.runtime.stack import local_stack
from services.runtime.supervise import (
    Build,
    ProcessFailed,
    input_topics,
    run_one,
    run_processors,
)


def _build(which: str, marker_offsets: dict[int, int] | None = None) -> Build:
    if which == "attribution":
        from services.attribution.app import build as attribution

        return functools.partial(attribution, marker_offsets=marker_offsets)
    from services.ledger.writer import build as ledger

    return ledger


def _marker_offsets(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> dict[int, int] | None:
    from services.runtime.supervise import parse_marker_offsets

    if value is None:
        return None
    try:
        return parse_marker_offsets(value)
    except ValueError as exc:
        raise click.BadParameter(f"partition:offset pairs, comma-separated ({exc})") from None


def _supervise(settings: Settings, until_idle: bool, progress: bool) -> None:
    """Both processors as child processes; a failed one is a one-line error."""
    from services.ledger.progress import progress_line

    try:
        run_processors(settings, until_idle, progress_line if progress else None)
    except ProcessFailed as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument(
    "which", type=click.Choice(["attribution", "ledger", "alerts", "all"]), default="all"
)
@click.option("--until-idle", is_flag=True, help="process the bounded input to its end, then exit")
@click.option("--run-id", default=None, help="end-of-input markers to wait for (set by `run all`)")
@click.option(
    "--follow",
    is_flag=True,
    help="with `all --until-idle`: the processors run elsewhere (e.g. docker compose); start "
    "none, wait until they have accounted for everything fed so far",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    help="beside running processors: seconds to wait for them",
)
@click.option(
    "--attribution-workers",
    type=click.IntRange(min=1),
    default=None,
    help="with `all`: attribution processes in one consumer group, sharing the events "
    "partitions [default: INFERLEDGER_ATTRIBUTION_WORKERS, 1]",
)
@click.option("--supervised", is_flag=True, hidden=True, help="started by `run all` or `up`")
@click.option(
    "--run-markers",
    default=None,
    hidden=True,
    callback=_marker_offsets,
    help="set by `run all`: the offsets of the run's end markers on the events partitions",
)
@click.option("--worker", default=None, hidden=True, help="set by `run all`: names the worker")
@click.pass_context
def run(
    ctx: click.Context,
    which: str,
    until_idle: bool,
    run_id: str | None,
    follow: bool,
    timeout: float,
    attribution_workers: int | None,
    supervised: bool,
    run_markers: dict[int, int] | None,
    worker: str | None,
) -> None:
    """Run processors: attribution, ledger (writer), alerts, or all.

    They read the broker of `inferledger up` or INFERLEDGER_KAFKA_BOOTSTRAP; without either
    there is no input to process, and `run` refuses. Beside a running `up`, `run all
    --until-idle` starts no processors: it asks `up`'s to close everything fed so far, and
    waits for them (`--follow` does the same for processors that run elsewhere)."""
    settings = settings_of(ctx)
    if attribution_workers is not None:
        if which != "all":
            raise click.UsageError(
                "--attribution-workers goes with `run all` (streaming, start `run attribution` "
                "as often as you want workers)"
            )
        settings = settings.model_copy(update={"attribution_workers": attribution_workers})
    if worker:
        logs.bind(worker=worker)
    require_broker(settings, "run")
    # the attribution processor keeps its durable state in Postgres too
    with local_stack(settings) as s:
        up_pid = None if supervised else _up_running(settings, s)
        if follow:
            if which != "all" or not until_idle:
                raise click.UsageError("--follow goes with `run all --until-idle`")
            _follow(s, None, timeout)
            return
        if up_pid is not None:
            if which != "all" or not until_idle:
                raise click.ClickException(
                    f"`inferledger up` (pid {up_pid}) already runs the processors on this "
                    "broker; a second set would join its consumer groups and wait for ever. "
                    "Use `run all --until-idle` to wait until it has accounted for what you "
                    "fed, or stop `up` first."
                )
            _follow(s, up_pid, timeout)
            return
        if which == "all":
            from services.ledger.db import migrate as do_migrate

            assert s.database_url
            do_migrate(s.database_url)
            if until_idle:  # interrupted, the bounded run is incomplete: exit non-zero
                _supervise(s, until_idle, progress=True)
            else:  # streaming until stopped (Ctrl-C, SIGTERM): a clean stop, as for `up`
                with contextlib.suppress(KeyboardInterrupt):
                    _supervise(s, until_idle, progress=True)
            return
        if which == "alerts":  # budgets against the ledger (Postgres): no input topics to end
            from services.alerts.app import run_forever
            from services.ledger.db import migrate as do_migrate

            assert s.database_url
            if not supervised:
                do_migrate(s.database_url)
            with ledger_required():
                run_forever(s, until_idle)
            return
        if until_idle and run_id is None:
            if which == "ledger":
                raise click.UsageError(
                    "`run ledger --until-idle` needs the --run-id of the "
                    "attribution run it follows (or use `run all`)"
                )
            from services.runtime.supervise import begin_bounded_run

            run_id, run_markers = begin_bounded_run(s)
        run_one(s, which, _build(which, run_markers), until_idle, run_id)


def _up_running(settings: Settings, resolved: Settings) -> int | None:
    """The pid of a running `inferledger up` whose broker this command resolved to."""
    from services.runtime.stack import running_stack

    running = running_stack(settings)
    if running and running.get("kafka_bootstrap") == resolved.kafka_bootstrap:
        return int(running["pid"])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: it exists
        return True
    return True


def _follow(settings: Settings, up_pid: int | None, timeout: float) -> None:
    """`run all --until-idle` beside running processors (`up`'s, or elsewhere with --follow):
    let them close what was fed (a heartbeat, docs/billing.md), and wait for their writer."""
    from services.ledger.markers import follow
    from services.ledger.progress import progress_line

    who = "the running processors"
    if up_pid is not None:
        who += f" of `inferledger up` (pid {up_pid})"
    click.echo(
        f"asking {who} to close everything fed so far, and waiting for their ledger writer",
        err=True,
    )
    status: Any = None
    if sys.stderr.isatty():
        from rich.console import Console

        status = Console(stderr=True).status("waiting")
        status.start()

    def on_wait(missing: set[int], waited: float) -> None:
        if up_pid is not None and not _alive(up_pid):
            raise click.ClickException(
                f"`inferledger up` (pid {up_pid}) exited while this waited. Start it again "
                "and run this again (its embedded broker keeps nothing: input it had not "
                "accounted for must be fed again)"
            )
        if status is not None:
            status.update(
                f"waiting: {len(missing)} cost-allocations partitions to go, "
                f"{progress_line(settings)}, {waited:.0f} s"
            )

    try:
        with ledger_required():
            run_id, missing = follow(settings, input_topics(settings), timeout, on_wait)
    finally:
        if status is not None:
            status.stop()
    if missing:
        raise click.ClickException(
            f"{who} have not accounted for run {run_id} after {timeout:.0f} s "
            f"(cost-allocations partitions {sorted(missing)} still to come): are they running? "
            "See their log and `inferledger audit`; running this again sends a new heartbeat"
        )
    click.echo(f"done: {who} closed everything fed before run {run_id}; "
               f"{progress_line(settings)}", err=True)  # fmt: skip


@click.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """The local stack and all processors, until stopped (Ctrl-C).

    The processors serve /metrics on INFERLEDGER_METRICS_LISTEN (one port each, from that
    one), else on free loopback ports; stack.json records their URLs for `inferledger top`."""
    from services.ledger.db import migrate as do_migrate
    from services.runtime.scrape import listen_urls
    from services.runtime.stack import free_ports
    from services.runtime.supervise import process_names

    settings = settings_of(ctx)
    names = process_names(settings)  # the components, then any further attribution workers
    if not settings.metrics_listen:
        base = free_ports(len(names))
        settings = settings.model_copy(update={"metrics_listen": f"127.0.0.1:{base}"})
    urls = listen_urls(settings.metrics_listen, names)
    with local_stack(settings, publish_state=True, metrics=urls) as s:
        assert s.database_url
        do_migrate(s.database_url)
        click.echo(f"INFERLEDGER_KAFKA_BOOTSTRAP={s.kafka_bootstrap}")
        click.echo(f"INFERLEDGER_DATABASE_URL={s.database_url}")
        click.echo(f"# /metrics (inferledger top): {' '.join(urls.values())}")
        with contextlib.suppress(KeyboardInterrupt):
            _supervise(s, until_idle=False, progress=False)
