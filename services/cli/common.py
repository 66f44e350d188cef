"""What every command group shares: the settings, input files, the broker check, tables."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date
from typing import Any

import click

from services.runtime.config import Settings
from services.runtime.stack import running_stack


@contextlib.contextmanager
def ledger_required() -> Iterator[None]:
    """A database that cannot be reached, has no ledger tables or refuses this login is a
    one-line error, not an SQL traceback."""
    import psycopg
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        yield
    except OperationalError as exc:  # no server, no such database, refused credentials
        first = str(exc.orig or exc).strip().splitlines()
        raise click.ClickException(
            f"cannot use the database: {first[-1].strip(chr(39)) if first else exc!r}"
        ) from None
    except psycopg.errors.InsufficientPrivilege as exc:  # from a raw cursor (COPY, roles)
        raise click.ClickException(_refused(exc)) from None
    except ProgrammingError as exc:
        if isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
            raise click.ClickException(_refused(exc.orig)) from None
        if not isinstance(exc.orig, psycopg.errors.UndefinedTable):
            raise
        raise click.ClickException(
            "this database has no ledger yet: run `inferledger migrate` (`up` and `run all` "
            "migrate too)"
        ) from None


def _refused(exc: Exception) -> str:
    """A login of a group role (migration 0008) doing what its role may not."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else repr(exc)
    return (
        f"the database refused: {first} (this login may not do that: "
        "migrate, budget set|delete and roles run as the database owner; "
        "docs/sql.md#roles-and-tenant-isolation)"
    )


def settings_of(ctx: click.Context) -> Settings:
    """The settings the root group loaded (``INFERLEDGER_*``)."""
    settings: Settings = ctx.obj
    return settings


class InputFile(click.ParamType):
    """A file to read (``-``: stdin), checked before anything starts: a missing, unreadable or
    directory path is a one-line error, not a traceback from deep inside the command."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        path = str(value)
        if path == "-":
            return path
        try:
            with open(path, "rb"):
                pass
        except IsADirectoryError:
            raise click.ClickException(f"{path} is a directory, not a file") from None
        except OSError as exc:
            raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from None
        return path


INPUT_FILE = InputFile()


def has_broker(settings: Settings) -> bool:
    """A broker that outlives this command: configured, or the one of a running ``up``."""
    return bool(settings.kafka_bootstrap or (running_stack(settings) or {}).get("kafka_bootstrap"))


def require_broker(settings: Settings, command: str) -> None:
    """Refuse to run ``command`` on a broker started for it alone: its topics would be empty
    and whatever it wrote would vanish when it exits."""
    if not has_broker(settings):
        raise click.ClickException(
            f"`inferledger {command}` needs the pipeline's broker, and none is running: start "
            "`./dev up` (or `inferledger up`) in another terminal, or set "
            "INFERLEDGER_KAFKA_BOOTSTRAP (and INFERLEDGER_DATABASE_URL) to your own services"
        )


def warn_ephemeral(settings: Settings) -> None:
    """Publishing commands still run on a broker of their own, with a note that it is one."""
    if not has_broker(settings):
        click.echo(
            "note: no INFERLEDGER_KAFKA_BOOTSTRAP and no `inferledger up` running: "
            "publishing to a broker that stops with this command",
            err=True,
        )


def day(value: Any) -> date | None:
    """A ``click.DateTime`` option as a date (None stays None)."""
    return None if value is None else value.date()
