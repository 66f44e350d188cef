"""ledger_entries partitioned by month; the daily rollup ledger_daily, kept by the database in
the writer's transaction; the per-day views read the rollup

Speed on a large ledger (issue 16): a year of 10 million entries.

- ``ledger_entries`` becomes a table partitioned by RANGE (bucket_start), one partition per UTC
  calendar month (``ledger_entries_y2026m03``), plus ``ledger_entries_default`` for a month
  nobody created a partition for (so no insert ever fails for want of a partition). The primary
  key is (entry_id, bucket_start): a partitioned table's unique keys must hold its partition
  key, and an entry id already names its bucket (services/accounting/entries.py), so this is
  the same key. The audit checks that no entry id appears twice across partitions.
- The writer calls ``inferledger_ledger_partition(month)`` (SECURITY DEFINER: the writer needs
  no DDL rights) before it writes a month it has not seen: it creates the month's partition
  unless the default partition already holds rows of that month (those stay there), or the
  month is more than ten years back or two months ahead (a wrong clock must not make
  thousands of partitions): those months go to the default partition too.
- Append-only, as before: the row trigger refusing UPDATE and DELETE is on the parent (Postgres
  clones it to every partition); TRUNCATE triggers are per table, so the parent and every
  partition get one (the partition function adds it to new partitions).
- ``ledger_daily``: per UTC day, resource, tenant (NULL for idle), model and currency, the sums
  of the journal's columns and counts of its entries (all, unpriced, billed). A statement-level
  AFTER INSERT trigger on ledger_entries adds each statement's new rows (its transition table:
  the rows really inserted, so ON CONFLICT DO NOTHING re-deliveries add nothing) in the same
  transaction. Nobody is granted writes on it; the trigger function is SECURITY DEFINER.
  ``inferledger audit`` recomputes it from the journal and fails on any difference.
- The per-day views (v_cost_per_completion, v_tenant_idle_share, v_tenant_spend,
  v_cost_per_completion_with_idle, and v_resource_day_tenants, the step they share) read
  ledger_daily, with the same columns and the same results; v_gpu_utilization (hourly, per
  bucket) reads the journal, whose month partitions and indexes answer it. The budget spend
  function keeps its arithmetic in a shape that reaches both by their keys.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op
from sqlalchemy import text

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

HERE = Path(__file__).resolve().parent


def _earlier(prefix: str) -> ModuleType:
    """An earlier migration's module, for its view definitions (they are recreated here)."""
    (path,) = HERE.glob(f'{prefix}_*.py')
    spec = importlib.util.spec_from_file_location(f'inferledger_migration_{prefix}', path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# every view that reads ledger_entries, in an order that drops dependents first
VIEWS = (
    'v_budget_status',
    'v_cost_per_completion_with_idle',
    'v_tenant_spend',
    'v_tenant_idle_share',
    'v_resource_day_tenants',
    'v_unallocated_billing',
    'v_gpu_utilization',
    'v_cost_per_completion',
)

COLUMNS = """entry_id, entry_kind, cost_basis, tenant_id, model, resource_id, bucket_start,
    bucket_seconds, completions, failed_requests, prompt_tokens, cached_prompt_tokens,
    completion_tokens, work_units, busy_seconds, amount, currency, billing_line_ids, recorded_at,
    row_hash"""

PARTITIONED = """
CREATE TABLE ledger_entries (
    entry_id varchar(64) NOT NULL,
    entry_kind text NOT NULL,
    cost_basis text NOT NULL,
    tenant_id text,
    model text,
    resource_id text NOT NULL,
    bucket_start timestamptz NOT NULL,
    bucket_seconds integer NOT NULL,
    completions integer NOT NULL DEFAULT 0,
    failed_requests integer NOT NULL DEFAULT 0,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    cached_prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    work_units numeric(38, 6) NOT NULL DEFAULT 0,
    busy_seconds numeric(20, 6) NOT NULL DEFAULT 0,
    amount numeric(38, 12) NOT NULL,
    currency varchar(3) NOT NULL,
    billing_line_ids text[] NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    row_hash varchar(64) NOT NULL DEFAULT '',
    CONSTRAINT pk_ledger_entries PRIMARY KEY (entry_id, bucket_start),
    CONSTRAINT ck_ledger_entries_entry_kind
        CHECK (entry_kind IN ('usage', 'idle', 'late_adjustment', 'reconciliation')),
    CONSTRAINT ck_ledger_entries_cost_basis
        CHECK (cost_basis IN ('provisional', 'billed', 'unpriced')),
    CONSTRAINT ck_ledger_entries_currency CHECK (currency ~ '^[A-Z]{3}$')
) PARTITION BY RANGE (bucket_start);
CREATE TABLE ledger_entries_default PARTITION OF ledger_entries DEFAULT;
CREATE INDEX ix_ledger_entries_tenant_bucket ON ledger_entries (tenant_id, bucket_start);
CREATE INDEX ix_ledger_entries_resource_bucket ON ledger_entries (resource_id, bucket_start);
CREATE INDEX ix_ledger_entries_recorded_at ON ledger_entries (recorded_at);
CREATE TRIGGER ledger_entries_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_refuse_change();
CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_refuse_change();
CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries_default
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_refuse_change();
"""

# These SECURITY DEFINER functions run as the schema's owner, so they search pg_catalog only
# (and pg_temp, last, which is never searched for functions or operators) and name the ledger's
# objects with their schema ({schema}, quoted): a function or operator that a role able to
# create in the schema made there, with the name and arguments of a built-in one (or a better
# match for them), is never called with the owner's rights, and no temporary table of the
# caller's stands in for ours.
PARTITION_FUNCTION = """
CREATE FUNCTION inferledger_ledger_partition(p_month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- creating a partition locks ledger_entries ACCESS EXCLUSIVE: queued behind a long reader (an
-- audit, a report) that request would hold up every writer and reader of the table until the
-- reader ends; it gives up after a moment instead, and the writer tries again later
SET lock_timeout = '2s' AS $$
DECLARE
    m date := date_trunc('month', p_month)::date;
    part text := format('ledger_entries_y%sm%s', to_char(m, 'YYYY'), to_char(m, 'MM'));
    lo timestamptz := m::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (m + interval '1 month')::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(format('{schema}.%I', part)) IS NOT NULL THEN
        RETURN part;
    END IF;
    -- a wrong clock (or a hostile sender) must not make a partition per month of a millennium:
    -- months more than ten years back or two months ahead stay in the default partition
    IF m < (now() AT TIME ZONE 'UTC')::date - interval '10 years'
       OR m > (now() AT TIME ZONE 'UTC')::date + interval '2 months' THEN
        RETURN 'ledger_entries_default';
    END IF;
    -- one creator at a time; the others find the partition made when the lock is theirs
    -- (pg_class read with a fresh snapshot: to_regclass may not see a table made meanwhile)
    PERFORM pg_advisory_xact_lock(hashtext('inferledger_ledger_partition'));
    IF EXISTS (SELECT 1 FROM pg_class WHERE relname = part
                                        AND relnamespace = '{schema}'::regnamespace) THEN
        RETURN part;
    END IF;
    IF EXISTS (SELECT 1 FROM {schema}.ledger_entries_default
               WHERE bucket_start >= lo AND bucket_start < hi) THEN
        RETURN 'ledger_entries_default';  -- its rows stay where they are (append-only)
    END IF;
    EXECUTE format('CREATE TABLE {schema}.%I PARTITION OF {schema}.ledger_entries '
                   'FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    EXECUTE format('CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON {schema}.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION {schema}.ledger_entries_refuse_change()',
                   part);
    RETURN part;
END $$
"""

DAILY = """
CREATE TABLE ledger_daily (
    day date NOT NULL,
    resource_id text NOT NULL,
    tenant_id text,
    model text,
    currency varchar(3) NOT NULL,
    entries bigint NOT NULL,
    unpriced_entries bigint NOT NULL,
    billed_entries bigint NOT NULL,
    completions bigint NOT NULL,
    failed_requests bigint NOT NULL,
    -- numeric, as sum(bigint) is: an entry may carry up to INT8_MAX tokens per count, and the
    -- rollup must take every sum the journal takes (or the writer would refuse the entries)
    prompt_tokens numeric NOT NULL,
    cached_prompt_tokens numeric NOT NULL,
    completion_tokens numeric NOT NULL,
    work_units numeric NOT NULL,
    busy_seconds numeric NOT NULL,
    amount numeric NOT NULL,
    -- in this order, a day range reads resource-days whole and sorted as the views group them
    CONSTRAINT uq_ledger_daily_day_resource_id_currency_tenant_id_model
        UNIQUE NULLS NOT DISTINCT (day, resource_id, currency, tenant_id, model)
);
CREATE INDEX ix_ledger_daily_tenant_id_day ON ledger_daily (tenant_id, day);
"""

# what one group of journal rows adds to ledger_daily (also what the audit recomputes)
DAILY_SUMS = """(bucket_start AT TIME ZONE 'UTC')::date AS day, resource_id, tenant_id, model,
    currency, count(*) AS entries,
    count(*) FILTER (WHERE cost_basis = 'unpriced') AS unpriced_entries,
    count(*) FILTER (WHERE cost_basis = 'billed') AS billed_entries,
    sum(completions) AS completions, sum(failed_requests) AS failed_requests,
    sum(prompt_tokens) AS prompt_tokens, sum(cached_prompt_tokens) AS cached_prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(work_units) AS work_units,
    sum(busy_seconds) AS busy_seconds, sum(amount) AS amount"""

# (EXECUTE revoked from PUBLIC: a role could otherwise put it on a table of its own, a
# temporary one needs no grant, and write what it likes into the rollup with the owner's rights;
# a trigger's function is not checked for EXECUTE when the trigger fires, so the writer needs
# none. It refuses any table but ledger_entries besides.)
DAILY_TRIGGER = f"""
CREATE FUNCTION ledger_daily_add() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_RELID <> '{{schema}}.ledger_entries'::regclass THEN
        RAISE EXCEPTION 'ledger_daily_add() adds only ledger_entries rows, not %',
            TG_RELID::regclass;
    END IF;
    INSERT INTO {{schema}}.ledger_daily AS d
    SELECT {DAILY_SUMS}
    FROM new_entries
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 5, 3, 4  -- one lock order for concurrent writers: the key's
    ON CONFLICT ON CONSTRAINT uq_ledger_daily_day_resource_id_currency_tenant_id_model
    DO UPDATE SET entries = d.entries + excluded.entries,
                  unpriced_entries = d.unpriced_entries + excluded.unpriced_entries,
                  billed_entries = d.billed_entries + excluded.billed_entries,
                  completions = d.completions + excluded.completions,
                  failed_requests = d.failed_requests + excluded.failed_requests,
                  prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
                  cached_prompt_tokens = d.cached_prompt_tokens + excluded.cached_prompt_tokens,
                  completion_tokens = d.completion_tokens + excluded.completion_tokens,
                  work_units = d.work_units + excluded.work_units,
                  busy_seconds = d.busy_seconds + excluded.busy_seconds,
                  amount = d.amount + excluded.amount;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION ledger_daily_add() FROM PUBLIC;
CREATE TRIGGER ledger_entries_daily
    AFTER INSERT ON ledger_entries REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_daily_add();
"""

# The views that read the rollup: the same columns, in the same order, and the same results as
# their journal versions (0001, 0006, 0007). sum(prompt_tokens + completion_tokens) over the
# journal is sum(prompt_tokens) + sum(completion_tokens) here (neither is ever NULL); "some
# entry is unpriced" is unpriced_entries > 0.
V_COST_PER_COMPLETION = """
CREATE VIEW v_cost_per_completion AS
SELECT day, tenant_id, model, currency,
       sum(completions)::bigint AS completions,
       sum(failed_requests)::bigint AS failed_requests,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(cached_prompt_tokens)::bigint AS cached_prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       sum(amount)::numeric(38, 12) AS amount,
       round(sum(amount) / nullif(sum(completions), 0), 12) AS cost_per_completion,
       round(sum(amount) * 1000 / nullif(sum(prompt_tokens) + sum(completion_tokens), 0), 12)
           AS cost_per_1k_tokens,
       bool_or(unpriced_entries > 0) AS has_unpriced
FROM ledger_daily
WHERE tenant_id IS NOT NULL
GROUP BY day, tenant_id, model, currency
"""

# base: every tenant of every resource-day (from the rollup), with its busy cost, unpriced flag,
# the resource-day's idle cost and the tenant's share of it (0 where the day has no idle)
V_RESOURCE_DAY_TENANTS = """
CREATE VIEW v_resource_day_tenants AS
WITH g AS (
    SELECT day, resource_id, currency, tenant_id, sum(amount)::numeric(38, 12) AS cost,
           sum(unpriced_entries) AS unpriced_entries
    FROM ledger_daily
    GROUP BY day, resource_id, currency, tenant_id
), w AS (
    SELECT day, resource_id, currency, tenant_id, cost, unpriced_entries,
           sum(cost) FILTER (WHERE tenant_id IS NULL) OVER r AS idle_cost,
           sum(greatest(cost, 0)) FILTER (WHERE tenant_id IS NOT NULL) OVER r AS positive
    FROM g
    WINDOW r AS (PARTITION BY day, resource_id, currency)
), weighted AS (
    SELECT day, resource_id, currency, tenant_id, cost AS busy_cost, unpriced_entries,
           idle_cost,
           CASE WHEN positive > 0 THEN greatest(cost, 0) ELSE 1 END AS weight
    FROM w
    WHERE tenant_id IS NOT NULL
), running AS (
    SELECT *,
           sum(weight) OVER (PARTITION BY day, resource_id, currency ORDER BY tenant_id)
               AS upto,
           sum(weight) OVER (PARTITION BY day, resource_id, currency) AS total
    FROM weighted
)
SELECT day, resource_id, tenant_id, currency, busy_cost, unpriced_entries > 0 AS has_unpriced,
       idle_cost AS resource_idle_cost,
       coalesce(round(idle_cost * upto / total, 12)
                - round(idle_cost * (upto - weight) / total, 12), 0::numeric(38, 12)) AS idle_share
FROM running
"""

# v_tenant_idle_share (0006): the rows of resource-days that have idle entries
V_TENANT_IDLE_SHARE = """
CREATE VIEW v_tenant_idle_share AS
SELECT day, resource_id, tenant_id, currency, busy_cost, resource_idle_cost, idle_share
FROM v_resource_day_tenants
WHERE resource_idle_cost IS NOT NULL
"""

# v_tenant_spend (0007): a tenant's busy cost and idle share summed over its resource-days
V_TENANT_SPEND = """
CREATE VIEW v_tenant_spend AS
SELECT tenant_id, currency, day,
       sum(busy_cost) AS amount,
       sum(idle_share) AS idle_share,
       sum(busy_cost) + sum(idle_share) AS amount_with_idle,
       bool_or(has_unpriced) AS has_unpriced
FROM v_resource_day_tenants
GROUP BY tenant_id, currency, day
"""

# v_cost_per_completion_with_idle (0007): each tenant's share split among its models on the
# resource-day. The models' busy costs are read per share row (LATERAL, by the rollup's key),
# so that a day range on the view reaches the shares' scan: a range does not pass through a
# join's equality to its other side.
V_COST_PER_COMPLETION_WITH_IDLE = """
CREATE VIEW v_cost_per_completion_with_idle AS
WITH shared AS (
    SELECT s.day, s.resource_id, s.currency, s.tenant_id, m.model, s.idle_share AS tenant_share,
           m.busy_cost
    FROM v_tenant_idle_share s
    CROSS JOIN LATERAL (
        SELECT d.model, sum(d.amount)::numeric(38, 12) AS busy_cost
        FROM ledger_daily d
        WHERE d.day = s.day AND d.resource_id = s.resource_id AND d.currency = s.currency
          AND d.tenant_id = s.tenant_id
        GROUP BY d.model
    ) m
), weighted AS (
    SELECT *,
           CASE WHEN sum(greatest(busy_cost, 0))
                         OVER (PARTITION BY day, resource_id, currency, tenant_id) > 0
                THEN greatest(busy_cost, 0) ELSE 1 END AS weight
    FROM shared
), running AS (
    SELECT *,
           sum(weight) OVER (PARTITION BY day, resource_id, currency, tenant_id ORDER BY model)
               AS upto,
           sum(weight) OVER (PARTITION BY day, resource_id, currency, tenant_id) AS total
    FROM weighted
), unshared AS (
    SELECT day, currency, sum(idle_cost)::numeric(38, 12) AS idle_cost
    FROM (
        SELECT day, resource_id, currency,
               sum(amount) FILTER (WHERE tenant_id IS NULL) AS idle_cost,
               count(tenant_id) AS tenant_entries
        FROM ledger_daily
        GROUP BY 1, 2, 3
    ) r
    WHERE tenant_entries = 0
    GROUP BY day, currency
), parts AS (
    SELECT day, tenant_id, model, currency,
           completions, failed_requests, prompt_tokens, cached_prompt_tokens, completion_tokens,
           amount::numeric(38, 12) AS amount, 0::numeric(38,12) AS idle_share,
           unpriced_entries > 0 AS unpriced
    FROM ledger_daily
    WHERE tenant_id IS NOT NULL
    UNION ALL
    SELECT day, tenant_id, model, currency, 0, 0, 0, 0, 0, 0::numeric(38,12),
           round(tenant_share * upto / total, 12)
             - round(tenant_share * (upto - weight) / total, 12),
           false
    FROM running
    UNION ALL
    SELECT day, NULL, NULL, currency, 0, 0, 0, 0, 0, 0::numeric(38,12), idle_cost, false
    FROM unshared
)
SELECT day, tenant_id, model, currency,
       sum(completions)::bigint AS completions,
       sum(failed_requests)::bigint AS failed_requests,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(cached_prompt_tokens)::bigint AS cached_prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       sum(amount) AS amount,
       round(sum(amount) / nullif(sum(completions), 0), 12) AS cost_per_completion,
       round(sum(amount) * 1000 / nullif(sum(prompt_tokens + completion_tokens), 0), 12)
           AS cost_per_1k_tokens,
       bool_or(unpriced) AS has_unpriced,
       sum(idle_share) AS idle_share,
       sum(amount) + sum(idle_share) AS amount_with_idle,
       round((sum(amount) + sum(idle_share)) / nullif(sum(completions), 0), 12)
           AS cost_per_completion_with_idle,
       round((sum(amount) + sum(idle_share)) * 1000
             / nullif(sum(prompt_tokens + completion_tokens), 0), 12)
           AS cost_per_1k_tokens_with_idle,
       tenant_id IS NULL AS unshared_idle
FROM parts
GROUP BY day, tenant_id, model, currency
"""

# inferledger_budget_spend (0006), the same arithmetic, in a shape whose plans stay small: the
# tenant's entries through its index (no OR across scopes), and its idle share per resource-day
# it used, by correlated subqueries that reach v_tenant_idle_share, the rollup and the journal by
# their keys. (0006's joined v_tenant_idle_share whole: 107 s for a tenant-month of a
# 10-million-entry ledger, against 0.1 s here.) JIT compiles these small lookups for longer than
# they run: off.
BUDGET_SPEND = """
CREATE FUNCTION inferledger_budget_spend(p_budget text, p_from timestamptz, p_to timestamptz)
RETURNS numeric LANGUAGE sql STABLE SET jit = off AS $$
WITH b AS (
    SELECT tenant_id, currency, include_idle_share FROM budgets WHERE budget_id = p_budget
), direct AS (
    SELECT e.amount
    FROM b
    JOIN ledger_entries e
      ON e.tenant_id = b.tenant_id AND e.currency = b.currency
     AND e.bucket_start >= p_from AND e.bucket_start < p_to
    UNION ALL
    SELECT e.amount
    FROM b
    JOIN ledger_entries e
      ON b.tenant_id IS NULL AND e.currency = b.currency
     AND e.bucket_start >= p_from AND e.bucket_start < p_to
     AND (e.tenant_id IS NOT NULL OR b.include_idle_share)
), used AS (
    SELECT DISTINCT d.day, d.resource_id, d.currency, d.tenant_id
    FROM b
    JOIN ledger_daily d ON d.tenant_id = b.tenant_id AND d.currency = b.currency
    WHERE b.include_idle_share
      AND d.day >= (p_from AT TIME ZONE 'UTC')::date AND d.day <= (p_to AT TIME ZONE 'UTC')::date
), shares AS (
    SELECT (SELECT x.idle_share FROM v_tenant_idle_share x
            WHERE x.day = u.day AND x.resource_id = u.resource_id AND x.currency = u.currency
              AND x.tenant_id = u.tenant_id) AS idle_share,
           (SELECT sum(i.amount) FROM ledger_daily i
            WHERE i.day = u.day AND i.resource_id = u.resource_id AND i.currency = u.currency
              AND i.tenant_id IS NULL) AS resource_idle_cost,
           (SELECT sum(e.amount) FROM ledger_entries e
            WHERE e.tenant_id IS NULL AND e.resource_id = u.resource_id
              AND e.currency = u.currency
              AND e.bucket_start >= greatest(p_from, u.day::timestamp AT TIME ZONE 'UTC')
              AND e.bucket_start < least(p_to, (u.day + 1)::timestamp AT TIME ZONE 'UTC'))
               AS window_idle
    FROM used u
)
SELECT (SELECT coalesce(sum(amount), 0) FROM direct)
     + (SELECT coalesce(sum(CASE WHEN window_idle = resource_idle_cost THEN idle_share
                                 ELSE round(idle_share * window_idle
                                            / nullif(resource_idle_cost, 0), 12) END), 0)
        FROM shares WHERE window_idle IS NOT NULL AND idle_share IS NOT NULL)
$$
"""

# v_gpu_utilization (0002) with UTC hours: date_trunc('hour', timestamptz) truncates in the
# session's time zone, so in a half-hour zone (Asia/Kolkata, America/St_Johns) its hours began
# at :30 UTC and mixed two buckets' hours. Same columns.
V_GPU_UTILIZATION = """
CREATE VIEW v_gpu_utilization AS
SELECT resource_id,
       date_trunc('hour', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
       currency,
       round(sum(busy_seconds) FILTER (WHERE tenant_id IS NULL)
             / nullif(count(DISTINCT bucket_start) * max(bucket_seconds), 0), 6) AS busy_fraction,
       sum(amount) AS cost,
       coalesce(sum(amount) FILTER (WHERE tenant_id IS NULL), 0) AS idle_cost,
       sum(amount) FILTER (WHERE cost_basis = 'billed') AS billed_cost,
       count(DISTINCT bucket_start) AS buckets
FROM ledger_entries
GROUP BY resource_id, date_trunc('hour', bucket_start AT TIME ZONE 'UTC'), currency
"""


def _schema() -> str:
    """The schema the migration runs in, quoted as an identifier."""
    return str(op.get_bind().execute(text('SELECT quote_ident(current_schema())')).scalar_one())


def _drop_views() -> None:
    for view in VIEWS:
        op.execute(f'DROP VIEW IF EXISTS {view}')


def _journal_views() -> list[str]:
    """The views that read the journal, as earlier migrations defined them."""
    m2, m6 = _earlier('0002'), _earlier('0006')
    return [m2.V_GPU_UTILIZATION, m2.V_UNALLOCATED_BILLING, m6.V_BUDGET_STATUS]


def upgrade() -> None:
    _drop_views()
    op.execute('ALTER TABLE ledger_entries RENAME TO ledger_entries_unpartitioned')
    op.execute('ALTER TABLE ledger_entries_unpartitioned '
               'RENAME CONSTRAINT pk_ledger_entries TO pk_ledger_entries_unpartitioned')
    for index in ('tenant_bucket', 'resource_bucket', 'recorded_at'):
        op.execute(f'ALTER INDEX ix_ledger_entries_{index} '
                   f'RENAME TO ix_ledger_entries_unpartitioned_{index}')
    op.execute(PARTITIONED)
    schema = _schema()
    op.execute(PARTITION_FUNCTION.format(schema=schema))
    op.execute(DAILY)
    op.execute(DAILY_TRIGGER.format(schema=schema))
    # a partition for every month the ledger holds, and for this month
    op.execute("""
        SELECT inferledger_ledger_partition(m)
        FROM (SELECT DISTINCT date_trunc('month', bucket_start AT TIME ZONE 'UTC')::date AS m
              FROM ledger_entries_unpartitioned
              UNION SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date) months
    """)
    # the rows move, and ledger_daily is filled by its trigger as they do
    op.execute(f'INSERT INTO ledger_entries ({COLUMNS}) '
               f'SELECT {COLUMNS} FROM ledger_entries_unpartitioned')
    op.execute('DROP TABLE ledger_entries_unpartitioned')
    op.execute('DROP FUNCTION inferledger_budget_spend(text, timestamptz, timestamptz)')
    _, unallocated, budget_status = _journal_views()
    gpu = V_GPU_UTILIZATION
    # (the budget function reads v_tenant_idle_share, and v_budget_status calls it)
    for sql in (V_COST_PER_COMPLETION, gpu, unallocated, V_RESOURCE_DAY_TENANTS,
                V_TENANT_IDLE_SHARE, BUDGET_SPEND, budget_status, V_TENANT_SPEND,
                V_COST_PER_COMPLETION_WITH_IDLE):
        op.execute(sql)


def downgrade() -> None:
    m1, m6, m7 = _earlier('0001'), _earlier('0006'), _earlier('0007')
    _drop_views()
    op.execute('DROP TRIGGER ledger_entries_daily ON ledger_entries')
    op.execute('DROP FUNCTION ledger_daily_add()')
    op.execute('DROP TABLE ledger_daily')
    op.execute('ALTER TABLE ledger_entries RENAME TO ledger_entries_partitioned')
    op.execute('ALTER TABLE ledger_entries_partitioned '
               'RENAME CONSTRAINT pk_ledger_entries TO pk_ledger_entries_partitioned')
    for index in ('tenant_bucket', 'resource_bucket', 'recorded_at'):
        op.execute(f'ALTER INDEX ix_ledger_entries_{index} '
                   f'RENAME TO ix_ledger_entries_partitioned_{index}')
    op.execute(f"""
        CREATE TABLE ledger_entries
            (LIKE ledger_entries_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
        ALTER TABLE ledger_entries ADD CONSTRAINT pk_ledger_entries PRIMARY KEY (entry_id);
        CREATE INDEX ix_ledger_entries_tenant_bucket ON ledger_entries (tenant_id, bucket_start);
        CREATE INDEX ix_ledger_entries_resource_bucket
            ON ledger_entries (resource_id, bucket_start);
        CREATE INDEX ix_ledger_entries_recorded_at ON ledger_entries (recorded_at);
        INSERT INTO ledger_entries ({COLUMNS}) SELECT {COLUMNS} FROM ledger_entries_partitioned;
        DROP TABLE ledger_entries_partitioned;
        DROP FUNCTION inferledger_ledger_partition(date);
        CREATE TRIGGER ledger_entries_no_update_delete
            BEFORE UPDATE OR DELETE ON ledger_entries
            FOR EACH ROW EXECUTE FUNCTION ledger_entries_refuse_change();
        CREATE TRIGGER ledger_entries_no_truncate
            BEFORE TRUNCATE ON ledger_entries
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_refuse_change();
    """)
    op.execute('DROP FUNCTION inferledger_budget_spend(text, timestamptz, timestamptz)')
    gpu, unallocated, budget_status = _journal_views()
    for sql in (m1.V_COST_PER_COMPLETION, gpu, unallocated, m6.V_TENANT_IDLE_SHARE,
                m6.BUDGET_SPEND, budget_status, m7.V_TENANT_SPEND,
                m7.V_COST_PER_COMPLETION_WITH_IDLE):
        op.execute(sql)
