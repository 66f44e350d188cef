"""``inferledger``: one command for every process and task.

The root group loads the settings and configures logging; each command group lives in its own
module of this package (``ingest``, ``run``, ``report``, ``replay``, ``dlq``, ``budget``,
``roles``, ``serve``, ``demo``, ``top``, ``export``) and is registered here.
``python -m services.cli.main`` is the same CLI (the supervisor starts the processors that way).
"""

from __future__ import annotations

import click

from services.cli import budget, demo, dlq, export, ingest, replay, report, roles, run, serve, top
from services.runtime import logs
from services.runtime.config import load_settings


@click.group()
@click.version_option(package_name="inferledger", prog_name="inferledger")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """inferledger: what every LLM completion cost each tenant, idle GPUs included."""
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    ctx.obj = settings


for command in (
    ingest.ingest,
    run.run,
    run.up,
    report.migrate,
    report.report,
    report.audit,
    export.export,
    replay.replay,
    dlq.dlq,
    budget.budget,
    roles.roles,
    serve.gateway,
    serve.proxy,
    demo.demo,
    top.top,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="inferledger")


if __name__ == "__main__":
    main()
