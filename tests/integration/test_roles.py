"""Roles and row-level security (migration 0008), against a real Postgres, connecting as the
logins themselves: a ledger of two tenants with idle rows (shared, and unshared on a resource
nobody used), bills, rates, the processors' state, budgets of both tenants and an all-tenants
budget with their alerts and deliveries.

A tenant's login reads only its tenant's rows, in every relation it can read (enumerated from
the catalogs, not listed by hand), with idle shares equal to those the owner computes over the
whole ledger; nothing it sets, resets or creates widens that; it writes nothing. The reader
reads every row and writes nothing; neither reads a webhook secret."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.helpers import connect_as

TENANT_READS = {
    "ledger_entries",
    "budgets",
    "budget_alerts",
    "v_cost_per_completion",
    "v_my_tenant_spend",
    "v_my_cost_per_completion_with_idle",
    "v_my_tenant_idle_share",
    "v_my_budget_status",
    "v_goodput",  # migration 0011: its own rows, by row-level security
    "v_waste",
}
MY_VIEWS = {r for r in TENANT_READS if r.startswith("v_my_")}
# what acme's login must never see, in any cell: beta's rows, the all-tenants budget and its
# alert, secrets and webhook URLs, and the resource that only ever sat idle
FORBIDDEN = ("beta", "everyone", "secret", "token", "hooks.example", "node-3")
RELKINDS = ("r", "p", "v", "m", "f")
SCHEMA = "public"  # named, not current_schema(): a session may put pg_temp first


def month_start() -> datetime:
    now = datetime.now(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def seed(conn: psycopg.Connection[Any]) -> None:
    """The ledger and everything around it, as the owner."""
    d = month_start()
    m = d + timedelta(minutes=1)
    entries = [
        # id, kind, tenant, model, resource, bucket, busy, completions, amount
        ("e1", "usage", "acme", "acme-model", "node-1", d, 30, 1, "0.3"),
        ("e2", "usage", "beta", "beta-model", "node-1", d, 10, 1, "0.1"),
        ("e3", "idle", None, None, "node-1", d, 40, 0, "0.4"),
        ("e4", "usage", "beta", "beta-model", "node-2", m, 20, 1, "0.2"),
        ("e5", "idle", None, None, "node-2", m, 30, 0, "0.2"),
        ("e6", "idle", None, None, "node-3", d, 0, 0, "0.5"),
        ("e7", "late_adjustment", "acme", "acme-model", "node-1", d, 0, 0, "-0.05"),
        ("e8", "usage", "acme", "acme-model", "node-2", m, 10, 1, "0.1"),
    ]
    for eid, kind, tenant, model, res, at, busy, n, amount in entries:
        conn.execute(
            "INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, tenant_id, model, "
            "resource_id, bucket_start, bucket_seconds, completions, prompt_tokens, "
            "completion_tokens, busy_seconds, amount, currency) "
            "VALUES (%s, %s, 'provisional', %s, %s, %s, %s, 60, %s, 100, 10, %s, %s, 'USD')",
            (eid, kind, tenant, model, res, at, n, busy, Decimal(amount)),
        )
    conn.execute(
        "INSERT INTO billing_lines (line_id, resource_id, period_start, period_end, cost, "
        "currency, charge_category, source, description) "
        "VALUES ('line-1', 'node-1', %s, %s, 1, 'USD', 'tax', 'focus', 'tax line')",
        (d, d + timedelta(hours=1)),
    )
    conn.execute(
        "INSERT INTO gpu_rates (rate_id, resource_id, price_per_hour, currency, effective_from, "
        "source) VALUES ('rate-1', 'node-1', 36, 'USD', %s, 'list')",
        (d,),
    )
    conn.execute("INSERT INTO resources (resource_id) VALUES ('node-1'), ('node-3')")
    conn.execute(
        "INSERT INTO counted_event_sets (resource_id, bucket_start, set_id, event_ids, statuses) "
        "VALUES ('node-1', %s, 'set-1', ARRAY['ev-acme-1', 'ev-beta-1'], ARRAY['ok', 'ok'])",
        (d,),
    )
    conn.execute(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) "
        "VALUES ('g', 'cost-allocations', 0, 5)"
    )
    conn.execute("INSERT INTO end_markers (run_id, topic, partition) VALUES ('run-1', 't', 0)")
    conn.execute(
        "INSERT INTO attribution_state (resource_id, kind, key, data) "
        "VALUES ('node-1', 'rate', 'k', '{}')"
    )
    conn.execute("INSERT INTO attribution_outbox (resource_id, payload) VALUES ('node-1', '\\x00')")
    conn.execute(
        "INSERT INTO attribution_progress (worker_id, closed_through) VALUES ('w1', %s)", (d,)
    )
    conn.execute("INSERT INTO resource_owners (resource_id, worker_id) VALUES ('node-1', 'w1')")
    budgets = [
        ("b-acme", "acme monthly", "acme", True, "acme-webhook-secret"),
        ("b-beta", "beta monthly", "beta", True, "beta-webhook-secret"),
        ("b-all", "everyone monthly", None, True, "all-webhook-secret"),
    ]
    for bid, name, tenant, idle, secret in budgets:
        conn.execute(
            "INSERT INTO budgets (budget_id, name, tenant_id, period, amount, currency, "
            "include_idle_share, webhooks, webhook_secret) "
            "VALUES (%s, %s, %s, 'month', 100, 'USD', %s, %s, %s)",
            (bid, name, tenant, idle, [f"https://hooks.example.com/{bid}-token"], secret),
        )
    alerts = [
        ("a-acme", "b-acme", "acme", "threshold", "0.5", "acme spent half"),
        ("a-beta", "b-beta", "beta", "threshold", "0.5", "beta spent half"),
        # an all-tenants budget's anomaly names a tenant: still not that tenant's alert
        ("a-all", "b-all", "acme", "anomaly", '["acme", "acme-model"]', "everyone: acme odd"),
    ]
    for aid, bid, tenant, kind, subject, text in alerts:
        conn.execute(
            "INSERT INTO budget_alerts (alert_id, budget_id, tenant_id, kind, subject, "
            "period_start, period_end, spend, budget, currency, text) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 50, 100, 'USD', %s)",
            (aid, bid, tenant, kind, subject, d, d + timedelta(days=28), text),
        )
        conn.execute(
            "INSERT INTO alert_deliveries (alert_id, target, attempt, delivered) "
            "VALUES (%s, %s, 1, true)",
            (aid, f"https://hooks.example.com/{bid}-token"),
        )
    conn.execute("ANALYZE")  # statistics exist: a tenant must not read them either


@pytest.fixture
def owner(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    conn = connect_as(db_url)
    conn.execute("SET TimeZone = 'UTC'")
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def ledger(owner: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    seed(owner)
    return owner


def rows(conn: psycopg.Connection[Any], query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    return list(conn.execute(query, params).fetchall())


def readable(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Each relation of the ledger's schema the session may read, with the columns it may read."""
    found = rows(
        conn,
        "SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum) "
        "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
        "AND NOT a.attisdropped WHERE c.relnamespace = %s::regnamespace "
        "AND c.relkind = ANY(%s) AND has_column_privilege(c.oid, a.attnum, 'SELECT') "
        "GROUP BY c.relname",
        (SCHEMA, list(RELKINDS)),
    )
    return {name: cols for name, cols in found}


def relations(conn: psycopg.Connection[Any]) -> dict[str, str]:
    found = rows(
        conn,
        "SELECT relname, relkind::text FROM pg_class "
        "WHERE relnamespace = %s::regnamespace AND relkind = ANY(%s)",
        (SCHEMA, list(RELKINDS)),
    )
    return {name: kind for name, kind in found}


def select_all(conn: psycopg.Connection[Any], rel: str, cols: list[str]) -> list[tuple[Any, ...]]:
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(SCHEMA, rel)
    )
    return sorted(rows(conn, query), key=repr)


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        rel: rows(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(SCHEMA, rel)))[0][
            0
        ]
        for rel in relations(conn)
    }


def expected_tenant_reads(conn: psycopg.Connection[Any]) -> set[str]:
    # ledger_daily (the daily rollup, when a migration has added it) is tenant-scoped too
    daily = rows(conn, "SELECT to_regclass('ledger_daily') IS NOT NULL")[0][0]
    return TENANT_READS | ({"ledger_daily"} if daily else set())


def assert_only(conn: psycopg.Connection[Any], tenant: str, forbidden: tuple[str, ...]) -> None:
    """Every relation the session reads holds rows of ``tenant`` only, and no forbidden text."""
    for rel, cols in readable(conn).items():
        got = select_all(conn, rel, cols)
        if rel != "ledger_daily":
            assert got, f"{rel} shows nothing to {tenant}'s login"
        if "tenant_id" in cols:
            at = cols.index("tenant_id")
            assert {r[at] for r in got} == {tenant}, (rel, got)
        for row in got:
            for cell in row:
                assert not any(f in str(cell) for f in forbidden), (rel, row)


OWN_ROWS = {
    # the tenant's view, and the owner's query it must equal (the idle shares over every tenant)
    "v_my_tenant_spend": "SELECT * FROM v_tenant_spend WHERE tenant_id = %s",
    "v_my_cost_per_completion_with_idle": (
        "SELECT * FROM v_cost_per_completion_with_idle WHERE tenant_id = %s"
    ),
    "v_my_tenant_idle_share": "SELECT * FROM v_tenant_idle_share WHERE tenant_id = %s",
    "v_cost_per_completion": "SELECT * FROM v_cost_per_completion WHERE tenant_id = %s",
    "ledger_entries": "SELECT * FROM ledger_entries WHERE tenant_id = %s",
}
STATUS_COLUMNS = (
    "budget_id, name, tenant_id, period, period_start, period_end, spend, budget, currency, "
    "spent_fraction, alerts_fired, include_idle_share"
)


def test_a_tenant_reads_its_own_rows_and_nothing_else(ledger, logins):
    acme = logins.make("tenant", "acme", "acme")
    beta = logins.make("tenant", "beta", "beta")
    conn = logins.connect(acme)
    conn.execute("SET TimeZone = 'UTC'")

    # what it can read at all, from the catalogs: exactly these relations
    assert set(readable(conn)) == expected_tenant_reads(ledger)
    assert "webhook_secret" not in readable(conn)["budgets"]
    assert "webhooks" not in readable(conn)["budgets"]
    assert not rows(
        conn,
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
        "AND CASE WHEN relkind = 'S' THEN has_sequence_privilege(oid, 'USAGE, SELECT, UPDATE') END",
    )
    executable = {
        r[0]
        for r in rows(
            conn,
            "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
            "AND has_function_privilege(oid, 'EXECUTE')",
        )
    }
    assert "inferledger_budget_spend" not in executable
    assert "inferledger_apply_privileges" not in executable
    assert "inferledger_ledger_partition" not in executable  # the writer's (if partitioned)
    assert {"inferledger_current_tenant", "inferledger_tenant_budget_status"} <= executable

    # in every one: acme's rows only, never idle, beta's, the all-tenants budget's or a secret
    assert_only(conn, "acme", FORBIDDEN)
    assert_only(logins.connect(beta), "beta", ("acme", "everyone", "secret", "node-3"))
    assert not rows(conn, "SELECT 1 FROM ledger_entries WHERE entry_kind = 'idle'")

    # the same rows as the owner's, the idle shares computed over the whole resource-day
    for rel, query in OWN_ROWS.items():
        mine = sorted(rows(conn, f"SELECT * FROM {rel}"), key=repr)
        assert mine == sorted(rows(ledger, query, ("acme",)), key=repr), rel
    spend = rows(conn, "SELECT sum(idle_share), sum(amount_with_idle) FROM v_my_tenant_spend")[0]
    # node-1: 0.4 x 0.25 / 0.35; node-2: 0.2 x 0.1 / 0.3
    assert spend == (Decimal("0.352380952381"), Decimal("0.702380952381"))
    status = rows(conn, f"SELECT {STATUS_COLUMNS} FROM v_my_budget_status")
    want = rows(
        ledger, f"SELECT {STATUS_COLUMNS} FROM v_budget_status WHERE tenant_id = %s", ("acme",)
    )
    assert status == want and status[0][6] == Decimal("0.702380952381")
    assert rows(conn, "SELECT budget_id FROM budgets") == [("b-acme",)]
    assert rows(conn, "SELECT alert_id FROM budget_alerts") == [("a-acme",)]
    assert rows(conn, "SELECT inferledger_current_tenant()") == [("acme",)]

    # another login's tenant, its budgets' status, any budget's spend: nothing, or refused
    assert rows(conn, "SELECT inferledger_current_tenant(%s)", (beta,)) == [(None,)]
    assert rows(conn, "SELECT * FROM inferledger_tenant_budget_status(%s)", (beta,)) == []
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT inferledger_budget_spend('b-beta', now() - interval '1 year', now())")
    hidden = (
        "billing_lines",
        "gpu_rates",
        "tenant_logins",
        "v_tenant_spend",
        "v_gpu_utilization",
        "prices",
        "v_tenant_margin",
        "v_tenant_revenue",
        "v_api_equivalent",
    )
    for rel in hidden:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(rel)))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT webhook_secret FROM budgets")
    # no statistics of the tables it reads through row-level security (most common values!)
    assert rows(conn, "SELECT count(*) FROM pg_stats WHERE schemaname = current_schema()") == [(0,)]
    # COPY goes through row-level security too (COPY of a table under row-level security reads
    # ONLY that table: none of a partitioned table's rows)
    kind = rows(ledger, "SELECT relkind::text FROM pg_class WHERE relname = 'ledger_entries'")
    partitioned = kind != [("r",)]
    for copy_sql, copy_want in (
        ("COPY (SELECT tenant_id FROM ledger_entries) TO STDOUT", {b"acme"}),
        ("COPY ledger_entries (tenant_id) TO STDOUT", set() if partitioned else {b"acme"}),
    ):
        with conn.cursor().copy(copy_sql) as copy:
            copied = b"".join(bytes(block) for block in copy)
        assert set(copied.splitlines()) == copy_want, copy_sql


def test_nothing_a_tenant_sets_resets_or_creates_widens_what_it_reads(ledger, logins):
    acme = logins.make("tenant", "acme", "acme")
    beta = logins.make("tenant", "beta", "beta")
    conn = logins.connect(acme)
    conn.execute("SET TimeZone = 'UTC'")
    before = {rel: select_all(conn, rel, cols) for rel, cols in readable(conn).items()}

    def unchanged() -> None:
        assert {rel: select_all(conn, rel, cols) for rel, cols in readable(conn).items()} == before

    # settings: custom ones are just settings; row_security off refuses instead of hiding
    for statement in (
        "SET inferledger.tenant = 'beta'",
        "SET app.tenant_id = 'beta'",
        "SET search_path = pg_temp, public",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "RESET ALL",
        "SET ROLE NONE",
        "RESET SESSION AUTHORIZATION",
    ):
        conn.execute(statement)
        unchanged()
    conn.execute("SET row_security = off")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        conn.execute("SELECT * FROM ledger_entries")
    assert (
        select_all(conn, "v_my_tenant_spend", readable(conn)["v_my_tenant_spend"])
        == before["v_my_tenant_spend"]
    )
    conn.execute("RESET row_security")
    unchanged()

    # roles: not a member of the reader's, nor anyone's session to take over
    for switch in (
        sql.SQL("SET ROLE inferledger_reader"),
        sql.SQL("SET ROLE inferledger_writer"),
        sql.SQL("SET ROLE {}").format(sql.Identifier(beta)),
        sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(beta)),
        sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(ledger.info.user)),
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(switch)
    # its group role: a member may set it, and then sees nothing (it is nobody's login)
    conn.execute("SET ROLE inferledger_tenant")
    for rel, cols in readable(conn).items():
        assert select_all(conn, rel, cols) == [], rel
    conn.execute("RESET ROLE")
    unchanged()

    # nothing to create in the schema; temporary objects run as the tenant (no more rows)
    assert rows(conn, "SELECT has_schema_privilege(current_schema(), 'CREATE')") == [(False,)]
    assert rows(conn, "SELECT has_database_privilege(current_database(), 'CREATE')") == [(False,)]
    for statement in (
        "CREATE VIEW public.mine AS SELECT * FROM ledger_entries",
        "CREATE TABLE public.mine (x int)",
        "CREATE FUNCTION public.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE SCHEMA mine",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    conn.execute("CREATE TEMP VIEW everything AS SELECT * FROM ledger_entries")
    assert {r[0] for r in rows(conn, "SELECT tenant_id FROM everything")} == {"acme"}
    # a tenant_logins of its own first in the search path: the function reads the real one
    conn.execute("CREATE TEMP TABLE tenant_logins (role_name text, tenant_id text)")
    conn.execute("INSERT INTO pg_temp.tenant_logins VALUES (current_user, 'beta')")
    conn.execute("SET search_path = pg_temp, public")
    assert rows(conn, "SELECT inferledger_current_tenant()") == [("acme",)]
    unchanged()
    conn.execute("RESET search_path")

    # a leaky function in the WHERE clause sees the tenant's rows only (security barriers:
    # row-level security's quals and the v_my_* views' run first)
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute(
        "CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 "
        "AS $$ BEGIN RAISE NOTICE 'leak: %', $1; RETURN true; END $$"
    )
    for rel, cols in readable(conn).items():
        notices.clear()
        everything = sql.SQL("concat_ws('|', {})").format(
            sql.SQL(", ").join(map(sql.Identifier, cols))
        )
        conn.execute(sql.SQL("SELECT 1 FROM {} WHERE pg_temp.leak({})").format(
            sql.Identifier(rel), everything
        ))  # fmt: skip
        assert notices or rel == "ledger_daily", rel
        leaked = [n for n in notices if any(f in n for f in FORBIDDEN) or "|idle|" in n]
        assert not leaked, (rel, leaked)
    # an error message is a leak too: a failing cast meets acme's values only
    for query in (
        "SELECT * FROM ledger_entries WHERE model::int = 1",
        "SELECT * FROM v_cost_per_completion WHERE model::int = 1",
        "SELECT * FROM v_my_cost_per_completion_with_idle WHERE model::int = 1",
        "SELECT * FROM v_my_tenant_idle_share WHERE resource_id::int = 1",
        "SELECT * FROM v_my_budget_status WHERE name::int = 1",
    ):
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as err:
            conn.execute(query)
        assert not any(f in str(err.value) for f in FORBIDDEN), (query, str(err.value))
    unchanged()


def attempts(rel: str, first_column: str) -> list[Any]:
    name = sql.Identifier(rel)
    return [
        sql.SQL("INSERT INTO {} DEFAULT VALUES").format(name),
        sql.SQL("UPDATE {} SET {} = {}").format(
            name, sql.Identifier(first_column), sql.Identifier(first_column)
        ),
        sql.SQL("DELETE FROM {}").format(name),
        sql.SQL("TRUNCATE {}").format(name),
        sql.SQL("SELECT 1 FROM {} FOR UPDATE").format(name),
    ]


def assert_writes_nothing(conn: psycopg.Connection[Any], owner: psycopg.Connection[Any]) -> None:
    before = counts(owner)
    for rel, kind in relations(owner).items():
        first = rows(
            owner,
            "SELECT attname::text FROM pg_attribute WHERE attrelid = %s::regclass AND attnum = 1",
            (rel,),
        )[0][0]
        for statement in attempts(rel, first):
            # a table refuses the privilege; a view may refuse to be written at all first
            expected = psycopg.errors.InsufficientPrivilege if kind in ("r", "p") else psycopg.Error
            with pytest.raises(expected):
                conn.execute(statement)
    for seq in rows(owner, "SELECT relname FROM pg_class WHERE relkind = 'S'"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT nextval(%s)", seq)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT inferledger_apply_privileges()")
    if rows(owner, "SELECT to_regprocedure('inferledger_ledger_partition(date)')")[0][0]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT inferledger_ledger_partition('2030-01-01')")
    assert counts(owner) == before


def test_a_tenant_writes_nothing(ledger, logins):
    conn = logins.connect(logins.make("tenant", "acme", "acme"))
    assert_writes_nothing(conn, ledger)


def test_the_reader_reads_every_row_but_secrets_and_writes_nothing(ledger, logins):
    reader = logins.make("reader", "reader")
    conn = logins.connect(reader)
    conn.execute("SET TimeZone = 'UTC'")
    everything = set(relations(ledger))
    got = readable(conn)
    assert set(got) == everything - MY_VIEWS
    assert "webhook_secret" not in got["budgets"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT webhook_secret FROM budgets")
    for rel in MY_VIEWS:  # the tenants' own views are nobody else's (empty would mislead)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(rel)))
    for rel, cols in got.items():  # every row, as the owner sees it
        if rel != "v_budget_status":  # its forecast moves with now(): below, without it
            assert select_all(conn, rel, cols) == select_all(ledger, rel, cols), rel
    status = f"SELECT {STATUS_COLUMNS} FROM v_budget_status ORDER BY budget_id"
    assert rows(conn, status) == rows(ledger, status)
    assert_writes_nothing(conn, ledger)


def test_the_writer_writes_what_the_processors_write_and_nothing_else(ledger, logins):
    writer = logins.make("writer", "writer")
    conn = logins.connect(writer)
    # it reads the webhook secrets (the alerts processor signs with them), not the logins
    assert len(rows(conn, "SELECT webhook_secret FROM budgets")) == 3
    assert rows(conn, "SELECT count(*) FROM ledger_entries") == [(8,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM tenant_logins")
    for statement in (
        "UPDATE ledger_entries SET amount = 0",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",
        "DELETE FROM billing_lines",
        "UPDATE gpu_rates SET price_per_hour = 0",
        "INSERT INTO budgets (budget_id, name, period, amount, currency) "
        "VALUES ('x', 'x', 'day', 1, 'USD')",
        "UPDATE budgets SET amount = 1",
        "DELETE FROM budget_alerts",
        "CREATE TABLE public.mine (x int)",
        "SELECT inferledger_apply_privileges()",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    # the daily rollup (when a migration has added it) is its trigger's to write, not the writer's
    if rows(ledger, "SELECT to_regclass('ledger_daily')")[0][0]:
        for statement in ("DELETE FROM ledger_daily", "UPDATE ledger_daily SET day = day"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # row-level security applies to it too, with a policy that lets it insert any tenant's
    with conn.transaction():
        conn.execute(
            "INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, resource_id, "
            "bucket_start, bucket_seconds, amount, currency) "
            "VALUES ('e9', 'idle', 'provisional', 'node-1', now(), 60, 0.1, 'USD')"
        )
        conn.execute(
            "INSERT INTO alert_deliveries (alert_id, target, attempt) VALUES ('a-all', 'x', 2)"
        )
        conn.execute("DELETE FROM attribution_outbox")
    assert rows(ledger, "SELECT count(*) FROM ledger_entries") == [(9,)]


def test_tenant_views_are_invoker_or_the_owners_barrier_views(ledger):
    """A view a tenant reads either runs as the tenant (row-level security applies) or is one of
    the v_my_* security_barrier views. CREATE OR REPLACE VIEW resets a view's options: a later
    migration that replaces one must run inferledger_apply_privileges() again."""
    found = rows(
        ledger,
        "SELECT c.relname, coalesce(c.reloptions, '{}')::text[] FROM pg_class c "
        "WHERE c.relkind = 'v' AND c.relnamespace = current_schema()::regnamespace "
        "AND has_table_privilege('inferledger_tenant', c.oid, 'SELECT')",
    )
    views = {r for r in expected_tenant_reads(ledger) if r.startswith("v_")}
    assert {name for name, _ in found} == views
    for name, options in found:
        want = "security_barrier=true" if name in MY_VIEWS else "security_invoker=true"
        assert want in options, (name, options)
    # the owner reads the whole ledger (the v_my_* views rely on it): no FORCE
    forced = rows(ledger, "SELECT relname FROM pg_class WHERE relforcerowsecurity")
    assert forced == []


def test_privileges_can_be_applied_again_and_group_roles_stay_plain(ledger):
    snapshot = (
        "SELECT c.relname, a.grantee::regrole::text, a.privilege_type "
        "FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.relnamespace = current_schema()::regnamespace "
        "UNION ALL SELECT c.relname || '.' || t.attname, a.grantee::regrole::text, "
        "a.privilege_type FROM pg_class c JOIN pg_attribute t ON t.attrelid = c.oid, "
        "aclexplode(t.attacl) a WHERE c.relnamespace = current_schema()::regnamespace "
        "UNION ALL SELECT polname || ' ON ' || polrelid::regclass::text, "
        "polroles::regrole[]::text, polqual::text FROM pg_policy ORDER BY 1, 2, 3"
    )
    before = rows(ledger, snapshot)
    ledger.execute("SELECT inferledger_apply_privileges()")
    assert rows(ledger, snapshot) == before
    groups = rows(
        ledger,
        "SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolcreaterole FROM pg_roles "
        "WHERE rolname LIKE 'inferledger\\_%' ORDER BY 1",
    )
    assert groups == [
        (name, False, False, False, False)
        for name in ("inferledger_reader", "inferledger_tenant", "inferledger_writer")
    ]
    # a group role that someone made more than a group role: the migration refuses to go on
    with contextlib.suppress(psycopg.Error), ledger.transaction():
        ledger.execute("GRANT pg_read_all_data TO inferledger_tenant")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="inferledger_tenant"):
            ledger.execute("SELECT inferledger_apply_privileges()")
        raise psycopg.Error("roll back")
    member = "SELECT pg_has_role('inferledger_tenant', 'pg_read_all_data', 'MEMBER')"
    assert rows(ledger, member) == [(False,)]
