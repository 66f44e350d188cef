"""``inferledger run`` and ``inferledger up``: the processors, bounded or streaming."""

from __future__ import annotations

import contextlib

import click

from services.cli.common import require_broker, settings_of
from services.runtime.config import Settings
from services.runtime.stack import local_stack
from services.runtime.supervise import Build, ProcessFailed, run_one, run_processors


def _build(which: str) -> Build:
    if which == "attribution":
        from services.attribution.app import build
    else:
        from services.ledger.writer import build
    return build


def _supervise(settings: Settings, until_idle: bool, progress: bool) -> None:
    """Both processors as child processes; a failed one is a one-line error."""
    from services.ledger.progress import progress_line

    try:
        run_processors(settings, until_idle, progress_line if progress else None)
    except ProcessFailed as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("which", type=click.Choice(["attribution", "ledger", "all"]), default="all")
@click.option("--until-idle", is_flag=True, help="process the bounded input to its end, then exit")
@click.option("--run-id", default=None, help="end-of-input markers to wait for (set by `run all`)")
@click.pass_context
def run(ctx: click.Context, which: str, until_idle: bool, run_id: str | None) -> None:
    """Run processors: attribution, ledger (writer) or all.

    They read the broker of `inferledger up` or INFERLEDGER_KAFKA_BOOTSTRAP; without either
    there is no input to process, and `run` refuses."""
    settings = settings_of(ctx)
    require_broker(settings, "run")
    # the attribution processor keeps its durable state in Postgres too
    with local_stack(settings) as s:
        if which == "all":
            from services.ledger.db import migrate as do_migrate

            assert s.database_url
            do_migrate(s.database_url)
            _supervise(s, until_idle, progress=True)
            return
        if until_idle and run_id is None:
            if which == "ledger":
                raise click.UsageError(
                    "`run ledger --until-idle` needs the --run-id of the "
                    "attribution run it follows (or use `run all`)"
                )
            from services.runtime.supervise import start_bounded_run

            run_id = start_bounded_run(s)
        run_one(s, which, _build(which), until_idle, run_id)


@click.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """The local stack and all processors, until stopped (Ctrl-C)."""
    from services.ledger.db import migrate as do_migrate

    with local_stack(settings_of(ctx), publish_state=True) as s:
        assert s.database_url
        do_migrate(s.database_url)
        click.echo(f"INFERLEDGER_KAFKA_BOOTSTRAP={s.kafka_bootstrap}")
        click.echo(f"INFERLEDGER_DATABASE_URL={s.database_url}")
        with contextlib.suppress(KeyboardInterrupt):
            _supervise(s, until_idle=False, progress=False)
