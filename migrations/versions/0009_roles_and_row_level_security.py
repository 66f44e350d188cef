"""roles and row-level security: inferledger_writer, inferledger_reader, inferledger_tenant;
tenant_logins; the tenants' own views (DESIGN.md section 4, docs/sql.md#roles-and-tenant-isolation)

- The three group roles are NOLOGIN and cluster-wide: created here if missing (race-safe: every
  test database is migrated concurrently on one server), never dropped (other databases use
  them). Logins are made members with `inferledger roles grant-tenant|grant-reader|grant-writer`.
- A tenant login is bound to its tenant by `tenant_logins`. `inferledger_current_tenant()`
  reads it for `current_user` (a SECURITY DEFINER function: tenants have no privilege on the
  table). Row-level security shows a tenant only its own rows of `ledger_entries` (never idle
  rows: their tenant_id is NULL), `budgets` (never all-tenants budgets, never `webhook_secret`
  or `webhooks`: column privileges) and `budget_alerts` (of its own budgets only), and of
  `ledger_daily` when that table exists.
- `v_cost_per_completion` becomes security_invoker, so that row-level security applies to it.
- The views that share idle cost (v_tenant_idle_share, v_tenant_spend,
  v_cost_per_completion_with_idle, v_budget_status) compute a tenant's share from the other
  tenants' busy cost and the idle rows. As invoker, under row-level security, they would show a
  tenant a zero idle share without a word. Tenants get no privilege on them; they read their
  own rows of them through security_barrier views owned by the migration's role (v_my_*),
  computed over the whole ledger, filtered to `current_user`'s tenant.
- Every grant is made by `inferledger_apply_privileges()`, which starts from nothing and can be
  run again: a later migration that adds a table or a view, or replaces one (CREATE OR REPLACE
  VIEW resets security_invoker), ends with `SELECT inferledger_apply_privileges()`.

Table owners are not subject to row-level security (no FORCE): the v_my_* views and the
budget-status function rely on reading the whole ledger as the owner.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

GROUPS = ('inferledger_writer', 'inferledger_reader', 'inferledger_tenant')

# What the processors write (services/ledger/db.py, services/attribution/state.py,
# services/alerts/*.py); they read every table and view but tenant_logins and the v_my_* views.
# Nothing else: ledger_daily (the daily rollup of ledger_entries, when a migration has added it)
# is written by its SECURITY DEFINER trigger, month partitions by inferledger_ledger_partition().
WRITER_WRITES = {
    'ledger_entries': 'INSERT',
    'counted_event_sets': 'INSERT',
    'billing_lines': 'INSERT',
    'gpu_rates': 'INSERT',
    'resources': 'INSERT, UPDATE',
    'end_markers': 'INSERT',
    'consumer_offsets': 'INSERT, UPDATE',
    'attribution_state': 'INSERT, UPDATE',
    'attribution_outbox': 'INSERT, DELETE',
    'attribution_progress': 'INSERT, UPDATE',
    'resource_owners': 'INSERT, UPDATE',
    'budget_alerts': 'INSERT',
    'alert_deliveries': 'INSERT',
}
# Tables with a tenant_id column, NULL for idle: a tenant sees its own rows.
TENANT_TABLES = ('ledger_entries', 'ledger_daily')
# Views tenants read as invoker (row-level security applies to what they read).
INVOKER_VIEWS = ('v_cost_per_completion',)
# The tenants' own rows of the views that share idle cost (security_barrier, the owner's).
MY_VIEWS = (
    'v_my_tenant_spend',
    'v_my_cost_per_completion_with_idle',
    'v_my_tenant_idle_share',
    'v_my_budget_status',
)
# Columns of budgets nobody but the owner and the writer (the alerts processor signs with it)
# reads; tenants do not read the webhook URLs either (they often carry a token).
SECRET_COLUMNS = ('webhook_secret',)
TENANT_HIDDEN_COLUMNS = ('webhook_secret', 'webhooks')


def _array(names: tuple[str, ...] | list[str]) -> str:
    return "ARRAY[" + ", ".join(f"'{n}'" for n in names) + "]::text[]"


def _writes() -> str:
    return "jsonb_build_object(" + ", ".join(f"'{t}', '{p}'" for t, p in WRITER_WRITES.items()) + ")"


def _apply_privileges(schema: str, name: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION inferledger_apply_privileges() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, {schema}, pg_temp AS $fn$
DECLARE
    s constant text := {name};
    ns constant oid := (SELECT oid FROM pg_namespace WHERE nspname = s);
    groups constant text[] := {_array(GROUPS)};
    tenant_tables constant text[] := {_array(TENANT_TABLES)};
    invoker_views constant text[] := {_array(INVOKER_VIEWS)};
    my_views constant text[] := {_array(MY_VIEWS)};
    secret_columns constant text[] := {_array(SECRET_COLUMNS)};
    tenant_hidden constant text[] := {_array(TENANT_HIDDEN_COLUMNS)};
    writes constant jsonb := {_writes()};
    g text;
    t text;
    rel text;
    r record;
    cols text;
BEGIN
    -- 1. the group roles: cluster-wide, created once whoever comes first (IF NOT EXISTS is
    --    not enough: two databases migrated at once both see none; the second CREATE waits for
    --    the first and fails with unique_violation, or duplicate_object once it committed)
    FOREACH g IN ARRAY groups LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = g) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', g);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
        -- a group role someone made a login, a superuser or a member of another role (say,
        -- of pg_read_all_data or inferledger_reader) would give every tenant more
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = g
                   AND (rolcanlogin OR rolsuper OR rolbypassrls OR rolcreaterole
                        OR rolcreatedb OR rolreplication))
           OR EXISTS (SELECT FROM pg_auth_members m JOIN pg_roles member ON member.oid = m.member
                      WHERE member.rolname = g) THEN
            RAISE EXCEPTION 'role % exists with attributes or memberships a group role of '
                'inferledger must not have (it must be NOLOGIN, with no other attribute, and '
                'a member of no role)', g USING ERRCODE = 'insufficient_privilege';
        END IF;
    END LOOP;

    -- 2. the database and the schema: nobody but the owner creates objects in it (PG 15's
    --    default; a database upgraded from an older version may still allow PUBLIC to)
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO inferledger_writer, inferledger_reader, '
                   'inferledger_tenant', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO inferledger_writer', current_database());
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', s);
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM inferledger_writer, inferledger_reader, '
                   'inferledger_tenant', s);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO inferledger_writer, inferledger_reader, '
                   'inferledger_tenant', s);

    -- 3. from nothing: every privilege of the three roles on the schema's relations
    FOR r IN SELECT c.relname, c.relkind FROM pg_class c
             WHERE c.relnamespace = ns AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    LOOP
        EXECUTE format('REVOKE ALL ON %s %I.%I FROM inferledger_writer, inferledger_reader, '
                       'inferledger_tenant',
                       CASE WHEN r.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                       s, r.relname);
    END LOOP;

    -- 4. views tenants read as invoker (CREATE OR REPLACE VIEW resets this: run this again)
    FOREACH rel IN ARRAY invoker_views LOOP
        IF to_regclass(format('%I.%I', s, rel)) IS NOT NULL THEN
            EXECUTE format('ALTER VIEW %I.%I SET (security_invoker = true)', s, rel);
        END IF;
    END LOOP;

    -- 5. the reader: every table and view, but secrets and the tenants' own views; the writer:
    --    the same plus tenant_logins' exception, and what the processors write
    FOR r IN SELECT c.relname, c.relkind FROM pg_class c
             WHERE c.relnamespace = ns AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
               AND c.relname <> ALL (my_views)
    LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('GRANT SELECT ON SEQUENCE %I.%I TO inferledger_reader', s, r.relname);
            EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %I.%I TO inferledger_writer',
                           s, r.relname);
            CONTINUE;
        END IF;
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
        FROM pg_attribute a
        WHERE a.attrelid = format('%I.%I', s, r.relname)::regclass AND a.attnum > 0
          AND NOT a.attisdropped AND a.attname <> ALL (secret_columns);
        IF r.relname = 'budgets' THEN
            EXECUTE format('GRANT SELECT (%s) ON %I.%I TO inferledger_reader', cols, s, r.relname);
        ELSE
            EXECUTE format('GRANT SELECT ON %I.%I TO inferledger_reader', s, r.relname);
        END IF;
        IF r.relname <> 'tenant_logins' THEN
            EXECUTE format('GRANT SELECT ON %I.%I TO inferledger_writer', s, r.relname);
        END IF;
        IF writes ? r.relname THEN
            EXECUTE format('GRANT %s ON %I.%I TO inferledger_writer',
                           writes ->> r.relname, s, r.relname);
        END IF;
    END LOOP;

    -- 6. the tenant: its rows (row-level security below) and its own views, nothing else
    FOREACH rel IN ARRAY tenant_tables || invoker_views || my_views || ARRAY['budget_alerts'] LOOP
        IF to_regclass(format('%I.%I', s, rel)) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON %I.%I TO inferledger_tenant', s, rel);
        END IF;
    END LOOP;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a
    WHERE a.attrelid = format('%I.budgets', s)::regclass AND a.attnum > 0
      AND NOT a.attisdropped AND a.attname <> ALL (tenant_hidden);
    EXECUTE format('GRANT SELECT (%s) ON %I.budgets TO inferledger_tenant', cols, s);

    -- 7. row-level security: the writer and the reader see every row, a tenant its own
    FOREACH rel IN ARRAY tenant_tables || ARRAY['budgets', 'budget_alerts'] LOOP
        IF to_regclass(format('%I.%I', s, rel)) IS NULL THEN
            CONTINUE;
        END IF;
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', s, rel);
        EXECUTE format('DROP POLICY IF EXISTS inferledger_writer_all ON %I.%I', s, rel);
        EXECUTE format('DROP POLICY IF EXISTS inferledger_reader_all ON %I.%I', s, rel);
        EXECUTE format('DROP POLICY IF EXISTS inferledger_tenant_own ON %I.%I', s, rel);
        EXECUTE format('CREATE POLICY inferledger_writer_all ON %I.%I FOR ALL '
                       'TO inferledger_writer USING (true) WITH CHECK (true)', s, rel);
        EXECUTE format('CREATE POLICY inferledger_reader_all ON %I.%I FOR SELECT '
                       'TO inferledger_reader USING (true)', s, rel);
        IF rel = 'budget_alerts' THEN  -- alerts of its own budgets (not an all-tenants one's)
            EXECUTE format('CREATE POLICY inferledger_tenant_own ON %I.budget_alerts FOR SELECT '
                           'TO inferledger_tenant USING (budget_id IN ('
                           'SELECT b.budget_id FROM %I.budgets b '
                           'WHERE b.tenant_id = (SELECT %I.inferledger_current_tenant())))',
                           s, s, s);
        ELSE  -- tenant_id NULL (idle rows, all-tenants budgets) equals nothing
            EXECUTE format('CREATE POLICY inferledger_tenant_own ON %I.%I FOR SELECT '
                           'TO inferledger_tenant '
                           'USING (tenant_id = (SELECT %I.inferledger_current_tenant()))',
                           s, rel, s);
        END IF;
    END LOOP;

    -- 8. functions: the spend of any budget only for those who read every tenant; the tenant's
    --    identity and its budgets' status only for tenants
    REVOKE EXECUTE ON FUNCTION inferledger_budget_spend(text, timestamptz, timestamptz) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION inferledger_budget_spend(text, timestamptz, timestamptz)
        TO inferledger_writer, inferledger_reader;
    REVOKE EXECUTE ON FUNCTION inferledger_current_tenant(name) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION inferledger_current_tenant(name) TO inferledger_tenant;
    REVOKE EXECUTE ON FUNCTION inferledger_tenant_budget_status(name) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION inferledger_tenant_budget_status(name) TO inferledger_tenant;
    REVOKE EXECUTE ON FUNCTION inferledger_apply_privileges() FROM PUBLIC;
    -- the writer makes each month's partition of ledger_entries (when it is partitioned) through
    -- this SECURITY DEFINER function: nobody else may (a tenant could make thousands)
    IF to_regprocedure(format('%I.inferledger_ledger_partition(date)', s)) IS NOT NULL THEN
        REVOKE EXECUTE ON FUNCTION inferledger_ledger_partition(date) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION inferledger_ledger_partition(date) TO inferledger_writer;
    END IF;
END
$fn$
"""


def _current_tenant(schema: str) -> str:
    # Inside a SECURITY DEFINER function current_user is the function's owner: the caller's
    # current_user comes in as the argument's default, evaluated where the function is called
    # (a policy, a view, a query). An explicit argument counts only for a role the session's
    # login may SET ROLE to (is a member of): nobody learns another login's tenant, and under
    # SET ROLE the policies follow the role set, as privileges do.
    return f"""
CREATE FUNCTION inferledger_current_tenant(p_role name DEFAULT current_user) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp AS $$
    SELECT t.tenant_id
    FROM {schema}.tenant_logins t
    JOIN pg_catalog.pg_roles r ON r.rolname = t.role_name
    WHERE t.role_name = p_role::text
      AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER')
$$
"""


def _tenant_budget_status(schema: str) -> str:
    # v_budget_status calls inferledger_budget_spend, and a function runs as whoever calls
    # it, a view's caller included: as a tenant, under row-level security, it would not see the
    # idle rows and would return a spend without the idle share. Run as the owner instead, for
    # the budgets of the caller's tenant only.
    return f"""
CREATE FUNCTION inferledger_tenant_budget_status(p_role name DEFAULT current_user)
RETURNS TABLE (budget_id text, name text, tenant_id text, period text,
               period_start timestamptz, period_end timestamptz, spend numeric, budget numeric,
               currency text, spent_fraction numeric, forecast_spend numeric,
               alerts_fired bigint, include_idle_share boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp AS $$
    SELECT s.budget_id::text, s.name, s.tenant_id, s.period, s.period_start, s.period_end,
           s.spend, s.budget, s.currency::text, s.spent_fraction, s.forecast_spend,
           s.alerts_fired, s.include_idle_share
    FROM {schema}.v_budget_status s
    WHERE s.tenant_id = {schema}.inferledger_current_tenant(p_role)
$$
"""


def _my_views(schema: str) -> list[str]:
    mine = f"(SELECT {schema}.inferledger_current_tenant())"
    views = [
        f"""CREATE VIEW v_my_{name} WITH (security_barrier = true) AS
            SELECT * FROM {schema}.v_{name} WHERE tenant_id = {mine}"""
        for name in ('tenant_spend', 'cost_per_completion_with_idle', 'tenant_idle_share')
    ]
    views.append(
        f"""CREATE VIEW v_my_budget_status WITH (security_barrier = true) AS
            SELECT * FROM {schema}.inferledger_tenant_budget_status() s
            WHERE s.tenant_id = {mine}"""
    )
    return views


def _schema() -> tuple[str, str]:
    """The schema the migrations run in: as an identifier, and as a literal."""
    ident, literal = op.get_bind().execute(
        sa.text("SELECT quote_ident(current_schema()), quote_literal(current_schema())")
    ).one()
    return str(ident), str(literal)


def upgrade() -> None:
    schema, name = _schema()
    op.create_table(
        'tenant_logins',
        sa.Column('role_name', sa.Text(), nullable=False),
        sa.Column('tenant_id', sa.Text(), nullable=False),
        sa.Column(
            'created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False
        ),
        sa.CheckConstraint("tenant_id <> ''", name=op.f('ck_tenant_logins_tenant_id')),
        sa.PrimaryKeyConstraint('role_name', name=op.f('pk_tenant_logins')),
    )
    op.execute(_current_tenant(schema))
    op.execute(_tenant_budget_status(schema))
    for view in _my_views(schema):
        op.execute(view)
    op.execute(_apply_privileges(schema, name))
    op.execute('SELECT inferledger_apply_privileges()')


def downgrade() -> None:
    _, name = _schema()
    op.execute(f"""
DO $$
DECLARE
    s constant text := {name};
    ns constant oid := (SELECT oid FROM pg_namespace WHERE nspname = s);
    rel text;
    r record;
BEGIN
    FOREACH rel IN ARRAY {_array(TENANT_TABLES)} || ARRAY['budgets', 'budget_alerts'] LOOP
        IF to_regclass(format('%I.%I', s, rel)) IS NOT NULL THEN
            EXECUTE format('DROP POLICY IF EXISTS inferledger_writer_all ON %I.%I', s, rel);
            EXECUTE format('DROP POLICY IF EXISTS inferledger_reader_all ON %I.%I', s, rel);
            EXECUTE format('DROP POLICY IF EXISTS inferledger_tenant_own ON %I.%I', s, rel);
            EXECUTE format('ALTER TABLE %I.%I DISABLE ROW LEVEL SECURITY', s, rel);
        END IF;
    END LOOP;
    FOREACH rel IN ARRAY {_array(INVOKER_VIEWS)} LOOP
        IF to_regclass(format('%I.%I', s, rel)) IS NOT NULL THEN
            EXECUTE format('ALTER VIEW %I.%I RESET (security_invoker)', s, rel);
        END IF;
    END LOOP;
    -- the roles stay (other databases use them): this database's grants go
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'inferledger_tenant') THEN
        FOR r IN SELECT c.relname, c.relkind FROM pg_class c
                 WHERE c.relnamespace = ns
                   AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
        LOOP
            EXECUTE format('REVOKE ALL ON %s %I.%I FROM inferledger_writer, inferledger_reader, '
                           'inferledger_tenant',
                           CASE WHEN r.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                           s, r.relname);
        END LOOP;
        REVOKE ALL ON FUNCTION inferledger_budget_spend(text, timestamptz, timestamptz)
            FROM inferledger_writer, inferledger_reader;
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM inferledger_writer, inferledger_reader, '
                       'inferledger_tenant', s);
        EXECUTE format('REVOKE ALL ON DATABASE %I FROM inferledger_writer, inferledger_reader, '
                       'inferledger_tenant', current_database());
    END IF;
    GRANT EXECUTE ON FUNCTION inferledger_budget_spend(text, timestamptz, timestamptz) TO PUBLIC;
    IF to_regprocedure(format('%I.inferledger_ledger_partition(date)', s)) IS NOT NULL THEN
        REVOKE ALL ON FUNCTION inferledger_ledger_partition(date) FROM inferledger_writer;
        GRANT EXECUTE ON FUNCTION inferledger_ledger_partition(date) TO PUBLIC;
    END IF;
END
$$
""")
    op.execute('DROP FUNCTION IF EXISTS inferledger_apply_privileges()')
    for view in reversed(MY_VIEWS):
        op.execute(f'DROP VIEW IF EXISTS {view}')
    op.execute('DROP FUNCTION IF EXISTS inferledger_tenant_budget_status(name)')
    op.execute('DROP FUNCTION IF EXISTS inferledger_current_tenant(name)')
    op.drop_table('tenant_logins')
