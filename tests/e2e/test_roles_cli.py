"""`inferledger roles grant-tenant|grant-reader|grant-writer|revoke|list` as a user runs them,
then the logins they make, connecting as them: a tenant's login reads its own rows; a rebinding
is refused until revoked; after `revoke` the login cannot connect and an open session of it can
read nothing; names and passwords are quoted, never interpolated; the processors run the worked
example end to end as a writer login, a reader reports it, a tenant reads its own share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.helpers import cli, connect_as, query_rows

DATA = Path(__file__).resolve().parents[1] / "data"
ENTRY = (
    "INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, tenant_id, model, "
    "resource_id, bucket_start, bucket_seconds, amount, currency) "
    "VALUES (%s, %s, 'provisional', %s, %s, 'node-1', '2024-01-01T00:00:00Z', 60, %s, 'USD')"
)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def refused(env: dict[str, str], *args: str, code: int = 1) -> str:
    """A one-line refusal (exit 1, or 2 for a usage error), never a traceback."""
    out = run(env, *args)
    assert out.returncode == code, (args, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and out.stderr.startswith(("Error:", "Usage:")), out.stderr
    return out.stderr


def db_env(db_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(INFERLEDGER_DATABASE_URL=db_url, **extra)
    return env


@pytest.fixture
def small_ledger(db_url: str) -> str:
    with connect_as(db_url) as owner:
        for row in (
            ("e1", "usage", "acme", "m-acme", Decimal("0.3")),
            ("e2", "usage", "beta", "m-beta", Decimal("0.1")),
            ("e3", "idle", None, None, Decimal("0.6")),
        ):
            owner.execute(ENTRY, row)
    return db_url


def tenants_seen(conn: psycopg.Connection[Any]) -> set[str | None]:
    return {r[0] for r in conn.execute("SELECT tenant_id FROM ledger_entries").fetchall()}


def test_grant_a_tenant_login_rebind_refused_revoke_then_grant_again(small_ledger, logins):
    role = logins.name("dashboard")
    logins.passwords[role] = "correct horse"
    env = db_env(small_ledger, ROLE_PW="correct horse")
    made = cli(env, "roles", "grant-tenant", "acme", role, "--password-env", "ROLE_PW")
    assert made.stdout.strip() == (
        f"{role}: created, LOGIN; password set; member of inferledger_tenant; bound to tenant acme"
    )
    session = logins.connect(role)
    assert tenants_seen(session) == {"acme"}
    # again for the same tenant: nothing changes; for another tenant or as a reader: refused
    assert cli(env, "roles", "grant-tenant", "acme", role).stdout.strip() == (
        f"{role}: nothing to do"
    )
    assert f"'{role}' is bound to tenant 'acme': revoke it first" in refused(
        env, "roles", "grant-tenant", "beta", role
    )
    assert "is a login of tenant 'acme'" in refused(env, "roles", "grant-reader", role)
    assert "is a login of tenant 'acme'" in refused(env, "roles", "grant-writer", role)
    listed = json.loads(cli(env, "roles", "list", "--format", "json").stdout)
    mine = [r for r in listed if r["role"] == role]
    assert mine == [
        {
            "role": role,
            "groups": "inferledger_tenant",
            "tenant_id": "acme",
            "login": True,
            "exists": True,
        }
    ]

    out = cli(env, "roles", "revoke", role).stdout.strip()
    assert out == (
        f"{role}: unbound from tenant acme; no longer a member of inferledger_tenant; "
        "LOGIN disabled"
    )
    # the open session keeps running, with nothing to read; a new one cannot log in
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        session.execute("SELECT * FROM ledger_entries")
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        connect_as(small_ledger, role, "correct horse")
    # the role is kept (it may own things, other databases may use it), unbound
    assert query_rows(small_ledger, f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'")
    assert not query_rows(small_ledger, "SELECT 1 FROM tenant_logins")

    # revoked, it may be bound to another tenant
    again = cli(env, "roles", "grant-tenant", "beta", role).stdout.strip()
    assert again == f"{role}: LOGIN enabled; member of inferledger_tenant; bound to tenant beta"
    assert tenants_seen(logins.connect(role)) == {"beta"}
    cli(env, "roles", "revoke", role)
    assert "there is no role 'il_no_such_role'" in refused(
        env, "roles", "revoke", "il_no_such_role"
    )


def test_names_and_passwords_are_quoted_never_interpolated(small_ledger, logins):
    role = logins.name("q\"'; DROP ROLE x; -- ü")
    password = "p'w\"\\; DROP TABLE ledger_entries; --"
    logins.passwords[role] = password
    env = db_env(small_ledger, ROLE_PW=password)
    cli(env, "roles", "grant-tenant", "t'\"; --", role, "--password-env", "ROLE_PW")
    stored = query_rows(
        small_ledger,
        "SELECT r.rolname, r.rolpassword, t.tenant_id FROM pg_authid r "
        "JOIN tenant_logins t ON t.role_name = r.rolname",
    )
    assert [(s[0], s[2]) for s in stored] == [(role, "t'\"; --")]
    # hashed by the client (SCRAM): the server never saw the password, no log holds it
    assert stored[0][1].startswith("SCRAM-SHA-256$") and password not in stored[0][1]
    assert query_rows(small_ledger, "SELECT count(*) FROM ledger_entries") == [(3,)]
    with logins.connect(role) as conn:
        assert conn.execute("SELECT inferledger_current_tenant()").fetchone() == ("t'\"; --",)
        assert tenants_seen(conn) == set()
    cli(env, "roles", "revoke", role)


def test_what_grant_and_revoke_refuse(small_ledger, logins, postgres_admin_url):
    env = db_env(small_ledger)
    reserved = [
        "postgres",
        "inferledger_reader",
        "inferledger_tenant",
        "Inferledger_Anything",
        "pg_monitor",
        "public",
    ]
    for name in reserved:
        assert "is reserved" in refused(env, "roles", "grant-tenant", "acme", name)
    assert "is reserved" in refused(env, "roles", "revoke", "postgres")
    for name in ("", " spaced", "line\nbreak", "a" * 64):
        refused(env, "roles", "grant-reader", name)
    for tenant in ("", "bell\x07", "x" * 129):
        refused(env, "roles", "grant-tenant", tenant, logins.name("t"))
    # passwords: at most one way, from a variable that is set, never empty
    both = ("--password", "x", "--password-env", "ROLE_PW")
    assert "at most one" in refused(env, "roles", "grant-reader", "r", *both, code=2)
    assert "$UNSET_PW is not set" in refused(
        env, "roles", "grant-reader", logins.name("r"), "--password-env", "UNSET_PW"
    )

    # existing roles that would get more than a tenant's rows, or give themselves more
    admin = connect_as(small_ledger)
    su, creator, bypass, reader, wide = (
        logins.name(s) for s in ("su", "creator", "bypass", "reader", "wide")
    )
    for role, attribute in ((su, "SUPERUSER"), (creator, "CREATEROLE"), (bypass, "BYPASSRLS")):
        admin.execute(
            sql.SQL("CREATE ROLE {} NOLOGIN {}").format(sql.Identifier(role), sql.SQL(attribute))
        )
    assert "is a superuser" in refused(env, "roles", "grant-tenant", "acme", su)
    assert "is a superuser" in refused(env, "roles", "revoke", su)
    assert "CREATEROLE" in refused(env, "roles", "grant-tenant", "acme", creator)
    assert "CREATEROLE" in refused(env, "roles", "grant-reader", creator)
    assert "BYPASSRLS" in refused(env, "roles", "grant-tenant", "acme", bypass)
    cli(env, "roles", "grant-reader", reader)
    assert "is a member of inferledger_reader: revoke it first" in refused(
        env, "roles", "grant-tenant", "acme", reader
    )
    # a grant of its own (or to PUBLIC) beyond the tenant's: refused, and nothing changed
    admin.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(wide)))
    admin.execute(sql.SQL("GRANT SELECT ON billing_lines TO {}").format(sql.Identifier(wide)))
    assert "would have SELECT on billing_lines" in refused(
        env, "roles", "grant-tenant", "acme", wide
    )
    assert not query_rows(small_ledger, "SELECT 1 FROM tenant_logins")
    assert query_rows(
        small_ledger,
        f"SELECT rolcanlogin, pg_has_role('{wide}', 'inferledger_tenant', 'MEMBER') "
        f"FROM pg_roles WHERE rolname = '{wide}'",
    ) == [(False, False)]
    admin.execute(sql.SQL("REVOKE SELECT ON billing_lines FROM {}").format(sql.Identifier(wide)))
    # two tenants' logins, one a member of the other: each could SET ROLE to the other
    cli(env, "roles", "grant-tenant", "acme", wide)
    linked = logins.name("linked")
    admin.execute(
        sql.SQL("CREATE ROLE {} IN ROLE {}").format(sql.Identifier(linked), sql.Identifier(wide))
    )
    assert "are members one of the other" in refused(env, "roles", "grant-tenant", "beta", linked)
    cli(env, "roles", "grant-tenant", "acme", linked)  # the same tenant: fine
    admin.close()

    # a login may not revoke itself (nor manage roles at all: that is the owner's)
    writer = logins.make("writer", "writer")
    as_writer = db_env(logins.url(writer))
    assert "is the role running this command" in refused(as_writer, "roles", "revoke", writer)
    assert "permission denied" in refused(as_writer, "roles", "grant-reader", logins.name("x"))


def test_the_processors_run_as_a_writer_login(cli_env, settings, logins):
    """Migrated as the owner (the fixture), then the worked example through the CLI with
    INFERLEDGER_DATABASE_URL set to a writer login: ingest, every processor (alerts included,
    against a budget the owner set), report and audit. A reader reports the same; a tenant reads
    its own share of the idle cost."""
    assert settings.database_url
    writer, reader, tenant = (logins.name(s) for s in ("writer", "reader", "acme"))
    for role in (writer, reader, tenant):
        logins.passwords[role] = f"pw of {role}"
    owner = dict(cli_env, WRITER_PW=logins.passwords[writer], READER_PW=logins.passwords[reader])
    cli(owner, "roles", "grant-writer", writer, "--password-env", "WRITER_PW")
    cli(owner, "roles", "grant-reader", reader, "--password-env", "READER_PW")
    cli(owner, "roles", "grant-tenant", "acme", tenant, "--password", logins.passwords[tenant])
    # a budget (the owner's to set) that the worked example's acme passes 50 % and 80 % of
    cli(owner, "budget", "set", "--tenant", "acme", "--period", "day", "--amount", "0.5")

    as_writer = dict(cli_env, INFERLEDGER_DATABASE_URL=logins.url(writer))
    cli(as_writer, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
    cli(as_writer, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
    cli(as_writer, "run", "all", "--until-idle")
    report = json.loads(cli(as_writer, "report", "--format", "json").stdout)
    by_key = {(r["tenant_id"], r["model"]): r["amount"] for r in report}
    assert by_key == {
        ("acme", "llama-70b"): "0.277992277992",
        ("acme", "llama-8b"): "0.138610038610",
        ("beta", "llama-70b"): "0.083397683398",
    }
    assert "audit passed" in cli(as_writer, "audit").stdout
    alerts = query_rows(
        settings.database_url,
        "SELECT a.subject, bool_or(d.delivered) FROM budget_alerts a "
        "JOIN alert_deliveries d USING (alert_id) GROUP BY 1 ORDER BY 1",
    )
    assert alerts == [("0.5", True), ("0.8", True)]
    # the writer may not set budgets (nor migrate, nor manage roles): a one-line refusal
    assert "permission denied for table budgets" in refused(
        as_writer, "budget", "set", "--tenant", "x", "--period", "day", "--amount", "1"
    )

    as_reader = dict(cli_env, INFERLEDGER_DATABASE_URL=logins.url(reader))
    assert json.loads(cli(as_reader, "report", "--format", "json").stdout) == report
    assert "acme daily" in cli(as_reader, "budget", "list").stdout
    assert "permission denied" in refused(as_reader, "budget", "delete", "nope")

    with logins.connect(tenant) as conn:
        mine = conn.execute(
            "SELECT tenant_id, amount, idle_share, amount_with_idle FROM v_my_tenant_spend"
        ).fetchall()
    assert mine == [
        ("acme", Decimal("0.416602316602"), Decimal("0.583243243243"), Decimal("0.999845559845"))
    ]
