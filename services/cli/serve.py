"""``inferledger gateway`` and ``inferledger proxy``: the HTTP ways in."""

from __future__ import annotations

import click

from services.cli.common import settings_of, warn_ephemeral
from services.runtime import logs
from services.runtime.metrics import parse_listen
from services.runtime.stack import local_stack

log = logs.get("inferledger")


@click.command()
@click.option("--listen", default=None, help="host:port (default INFERLEDGER_GATEWAY_LISTEN)")
@click.pass_context
def gateway(ctx: click.Context, listen: str | None) -> None:
    """The HTTP ingest gateway: events (JSON, NDJSON, CloudEvents), rates and bills."""
    from aiohttp import web

    from services.ingest.gateway import Gateway
    from services.runtime.kafka import ensure_topics

    warn_ephemeral(settings_of(ctx))
    with local_stack(settings_of(ctx), need_database=False) as s:
        ensure_topics(s)
        if not s.gateway_tokens:
            click.echo("note: INFERLEDGER_GATEWAY_TOKENS is empty: all requests get 401", err=True)
        host, port = parse_listen(listen or s.gateway_listen)
        log.info("gateway listening", host=host, port=port)
        web.run_app(Gateway(s).app(), host=host, port=port, print=None)


@click.command()
@click.option("--listen", default=None, help="host:port (default INFERLEDGER_PROXY_LISTEN)")
@click.pass_context
def proxy(ctx: click.Context, listen: str | None) -> None:
    """The OpenAI-compatible metering proxy in front of vLLM, SGLang, TGI or TensorRT-LLM."""
    from aiohttp import web

    from services.ingest.proxy import Proxy
    from services.runtime.kafka import ensure_topics

    warn_ephemeral(settings_of(ctx))
    with local_stack(settings_of(ctx), need_database=False) as s:
        ensure_topics(s)
        host, port = parse_listen(listen or s.proxy_listen)
        log.info("proxy listening", host=host, port=port)
        web.run_app(Proxy(s).app(), host=host, port=port, print=None, handler_cancellation=True)
