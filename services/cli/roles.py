"""``inferledger roles grant-tenant|grant-reader|grant-writer|revoke|list``: database logins.

Three group roles (migration 0008) hold the privileges: ``inferledger_writer`` (the
processors), ``inferledger_reader`` (reads every tenant, writes nothing) and
``inferledger_tenant`` (reads its own tenant's rows, by row-level security). These commands make
login roles members of them; run them as the database owner (the role that ran ``migrate``).
docs/sql.md#roles-and-tenant-isolation says what each role reads.
"""

from __future__ import annotations

import os
from typing import Any

import click

from services.cli.common import ledger_required, settings_of
from services.runtime.stack import local_stack

_PASSWORD_OPTIONS = (
    click.option(
        "--password",
        default=None,
        help="the login's password (visible to other users in the process list: prefer the "
        "two options below)",
    ),
    click.option("--password-env", metavar="VAR", default=None, help="read it from $VAR"),
    click.option("--password-prompt", is_flag=True, help="ask for it (hidden, twice)"),
)


def _password_options(f: Any) -> Any:
    for option in reversed(_PASSWORD_OPTIONS):
        f = option(f)
    return f


def password_of(password: str | None, env: str | None, prompt: bool) -> str | None:
    """The password from at most one of the three options (None: leave it as it is)."""
    given = [n for n, v in (("--password", password), ("--password-env", env)) if v is not None]
    if prompt:
        given.append("--password-prompt")
    if len(given) > 1:
        raise click.UsageError(f"give at most one of {', '.join(given)}")
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise click.ClickException(f"--password-env: ${env} is not set or empty")
        return value
    if prompt:
        value = click.prompt("password", hide_input=True, confirmation_prompt=True)
        return str(value)
    if password is not None:
        if not password:
            raise click.ClickException("--password must not be empty")
        click.echo(
            "note: a password on the command line is visible to other users of this machine; "
            "prefer --password-env or --password-prompt",
            err=True,
        )
    return password


def _run(ctx: click.Context, action: Any) -> Any:
    from services.ledger.db import make_engine
    from services.ledger.roles import RoleError

    with local_stack(settings_of(ctx), need_broker=False) as s, ledger_required():
        assert s.database_url
        engine = make_engine(s.database_url)
        try:
            return action(engine)
        except RoleError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            engine.dispose()


def _report(outcome: Any) -> None:
    click.echo(outcome.summary())
    for warning in outcome.warnings:
        click.echo(f"note: {warning}", err=True)


@click.group()
def roles() -> None:
    """Database logins: tenants (their own rows only), readers (every tenant), the processors'
    writer. Run as the database owner."""


@roles.command("grant-tenant")
@click.argument("tenant")
@click.argument("role")
@_password_options
@click.pass_context
def grant_tenant(
    ctx: click.Context,
    tenant: str,
    role: str,
    password: str | None,
    password_env: str | None,
    password_prompt: bool,
) -> None:
    """Make ROLE (created if missing) a login of TENANT: it reads that tenant's rows and its own
    views (v_my_*), nothing else, and writes nothing. A role bound to another tenant must be
    revoked first."""
    from services.ledger.roles import grant

    secret = password_of(password, password_env, password_prompt)
    _report(_run(ctx, lambda e: grant(e, "tenant", role, tenant, secret)))


@roles.command("grant-reader")
@click.argument("role")
@_password_options
@click.pass_context
def grant_reader(
    ctx: click.Context,
    role: str,
    password: str | None,
    password_env: str | None,
    password_prompt: bool,
) -> None:
    """Make ROLE (created if missing) a reader: every table and view, every tenant, no webhook
    secret; writes nothing."""
    from services.ledger.roles import grant

    secret = password_of(password, password_env, password_prompt)
    _report(_run(ctx, lambda e: grant(e, "reader", role, None, secret)))


@roles.command("grant-writer")
@click.argument("role")
@_password_options
@click.pass_context
def grant_writer(
    ctx: click.Context,
    role: str,
    password: str | None,
    password_env: str | None,
    password_prompt: bool,
) -> None:
    """Make ROLE (created if missing) the processors' login: what `run` and `up` write and read
    (not `migrate`, `budget set|delete` or `roles`: those run as the owner)."""
    from services.ledger.roles import grant

    secret = password_of(password, password_env, password_prompt)
    _report(_run(ctx, lambda e: grant(e, "writer", role, None, secret)))


@roles.command("revoke")
@click.argument("role")
@click.pass_context
def revoke_role(ctx: click.Context, role: str) -> None:
    """Unbind ROLE from its tenant, revoke the group roles, disable its login. The role is not
    dropped (it may own objects or be used in other databases): DROP ROLE it yourself."""
    from services.ledger.roles import revoke

    _report(_run(ctx, lambda e: revoke(e, role)))


@roles.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def list_roles(ctx: click.Context, fmt: str) -> None:
    """Logins of the three group roles, and tenant bindings."""
    from services.ledger.report import render
    from services.ledger.roles import logins

    rows = _run(ctx, logins)
    click.echo(render(rows, fmt, "inferledger logins"), nl=fmt != "table")
