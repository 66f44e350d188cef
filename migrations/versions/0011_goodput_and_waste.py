"""Goodput and waste: request classes on ledger entries, in the daily rollup, and two views

Issue 18, part 2. The attribution processor puts every request in one class (within its
latency objective, outside it, failed, cancelled; services/accounting/slo.py) and splits each
entry's amount over the classes exactly (services/accounting/shares.py).

- ``ledger_entries`` (the partitioned parent: the partitions follow) gains
  ``completions_within_slo`` and ``cancelled_requests`` (counts, parts of ``completions`` and
  ``failed_requests``) and ``slo_miss_amount``, ``failed_amount``, ``cancelled_amount`` (parts of
  ``amount``; the part within objective is ``amount`` minus the three). Rows written before
  this migration hold 0 in each: their requests were never judged (the journal is append-only,
  nothing is back-filled). The row hash does not cover the new columns (its form is frozen).
- ``ledger_daily`` gains their sums, and its trigger function ``ledger_daily_add()`` is
  replaced with the new sums (the same SECURITY DEFINER and search_path hardening as 0008;
  services/ledger/rollup.py keeps the audit's copy, held equal by tests).
- ``v_goodput`` and ``v_waste`` read ``ledger_daily`` (security_invoker).

Ends by re-creating 0009's ``inferledger_apply_privileges()`` with ``v_goodput`` and ``v_waste``
among the views tenants read as invoker (their own rows, by row-level security), and applying it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 13:00:00
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op
from sqlalchemy import text

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

HERE = Path(__file__).resolve().parent

COUNTS = ('completions_within_slo', 'cancelled_requests')
AMOUNTS = ('slo_miss_amount', 'failed_amount', 'cancelled_amount')
VIEWS = ('v_waste', 'v_goodput')

# what one group of journal rows adds to ledger_daily (also what the audit recomputes): 0008's
# sums, then the goodput and waste sums (in the order of ledger_daily's columns)
DAILY_SUMS = """(bucket_start AT TIME ZONE 'UTC')::date AS day, resource_id, tenant_id, model,
    currency, count(*) AS entries,
    count(*) FILTER (WHERE cost_basis = 'unpriced') AS unpriced_entries,
    count(*) FILTER (WHERE cost_basis = 'billed') AS billed_entries,
    sum(completions) AS completions, sum(failed_requests) AS failed_requests,
    sum(prompt_tokens) AS prompt_tokens, sum(cached_prompt_tokens) AS cached_prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(work_units) AS work_units,
    sum(busy_seconds) AS busy_seconds, sum(amount) AS amount,
    sum(completions_within_slo) AS completions_within_slo,
    sum(cancelled_requests) AS cancelled_requests, sum(slo_miss_amount) AS slo_miss_amount,
    sum(failed_amount) AS failed_amount, sum(cancelled_amount) AS cancelled_amount"""

_SUMMED = ('entries', 'unpriced_entries', 'billed_entries', 'completions', 'failed_requests',
           'prompt_tokens', 'cached_prompt_tokens', 'completion_tokens', 'work_units',
           'busy_seconds', 'amount', *COUNTS, *AMOUNTS)
_SET = ',\n                  '.join(f'{c} = d.{c} + excluded.{c}' for c in _SUMMED)

# 0008's function with the new sums: the same hardening (SECURITY DEFINER, search_path of
# pg_catalog and pg_temp only, qualified names, ledger_entries only, EXECUTE revoked)
DAILY_FUNCTION = f"""
CREATE OR REPLACE FUNCTION ledger_daily_add() RETURNS trigger
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
    DO UPDATE SET {_SET};
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION ledger_daily_add() FROM PUBLIC;
"""

# completions within objective per day, tenant and model; what all of it cost per completion
# within objective (the spend of the goodput, waste included); the parts of the amount
V_GOODPUT = """
CREATE VIEW v_goodput WITH (security_invoker = true) AS
SELECT day, tenant_id, model, currency,
       sum(completions)::bigint AS completions,
       sum(completions_within_slo)::bigint AS completions_within_slo,
       sum(completions - completions_within_slo)::bigint AS completions_outside_slo,
       sum(failed_requests)::bigint AS failed_requests,
       sum(cancelled_requests)::bigint AS cancelled_requests,
       sum(amount)::numeric(38, 12) AS amount,
       sum(amount - slo_miss_amount - failed_amount - cancelled_amount)::numeric(38, 12)
           AS within_slo_amount,
       round(sum(completions_within_slo)::numeric / nullif(sum(completions), 0), 6)
           AS goodput_fraction,
       round(sum(amount) / nullif(sum(completions_within_slo), 0), 12)
           AS cost_per_completion_within_slo,
       bool_or(unpriced_entries > 0) AS has_unpriced
FROM ledger_daily
WHERE tenant_id IS NOT NULL
GROUP BY day, tenant_id, model, currency
"""

# the cost that bought nothing: failed (status error), cancelled and objective-missing requests
V_WASTE = """
CREATE VIEW v_waste WITH (security_invoker = true) AS
SELECT day, tenant_id, model, resource_id, currency,
       sum(amount)::numeric(38, 12) AS amount,
       sum(failed_amount)::numeric(38, 12) AS failed_cost,
       sum(cancelled_amount)::numeric(38, 12) AS cancelled_cost,
       sum(slo_miss_amount)::numeric(38, 12) AS slo_miss_cost,
       sum(failed_amount + cancelled_amount + slo_miss_amount)::numeric(38, 12) AS waste_cost,
       round(sum(failed_amount + cancelled_amount + slo_miss_amount)
             / nullif(sum(amount), 0), 6) AS waste_share
FROM ledger_daily
WHERE tenant_id IS NOT NULL
GROUP BY day, tenant_id, model, resource_id, currency
"""


def _earlier(prefix: str) -> ModuleType:
    (path,) = HERE.glob(f'{prefix}_*.py')
    spec = importlib.util.spec_from_file_location(f'inferledger_migration_{prefix}', path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema() -> str:
    return str(op.get_bind().execute(text('SELECT quote_ident(current_schema())')).scalar_one())


def upgrade() -> None:
    for name in COUNTS:
        op.execute(f'ALTER TABLE ledger_entries ADD COLUMN {name} integer NOT NULL DEFAULT 0')
        op.execute(f'ALTER TABLE ledger_daily ADD COLUMN {name} bigint NOT NULL DEFAULT 0')
    for name in AMOUNTS:
        op.execute(f'ALTER TABLE ledger_entries ADD COLUMN {name} numeric(38, 12) NOT NULL '
                   'DEFAULT 0')
        op.execute(f'ALTER TABLE ledger_daily ADD COLUMN {name} numeric NOT NULL DEFAULT 0')
    for name in (*COUNTS, *AMOUNTS):  # the rollup's columns have no default (0008's neither)
        op.execute(f'ALTER TABLE ledger_daily ALTER COLUMN {name} DROP DEFAULT')
    op.execute(DAILY_FUNCTION.format(schema=_schema()))
    op.execute(V_GOODPUT)
    op.execute(V_WASTE)
    # tenants read their own rows of both (security_invoker: row-level security applies; they
    # need no other tenant's rows and no idle row, unlike the idle-sharing views)
    _privileges(TENANT_VIEWS)


TENANT_VIEWS = ('v_goodput', 'v_waste')


def _privileges(added_invoker_views: tuple[str, ...]) -> None:
    """0009's privilege function with 0010's writer list and, after 0011, these views among
    those tenants read as invoker; then applied."""
    m9, m10 = _earlier('0009'), _earlier('0010')
    m9.WRITER_WRITES = {**m9.WRITER_WRITES, **m10.ADDED_WRITES}
    m9.INVOKER_VIEWS = (*m9.INVOKER_VIEWS, *added_invoker_views)
    schema, name = m9._schema()
    op.execute(m9._apply_privileges(schema, name))
    op.execute('SELECT inferledger_apply_privileges()')


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f'DROP VIEW IF EXISTS {view}')
    m8 = _earlier('0008')
    function = m8.DAILY_TRIGGER[: m8.DAILY_TRIGGER.index('CREATE TRIGGER')]
    op.execute(function.replace('CREATE FUNCTION', 'CREATE OR REPLACE FUNCTION', 1)
               .format(schema=_schema()))
    for name in (*COUNTS, *AMOUNTS):
        op.execute(f'ALTER TABLE ledger_daily DROP COLUMN {name}')
        op.execute(f'ALTER TABLE ledger_entries DROP COLUMN {name}')
    _privileges(())
