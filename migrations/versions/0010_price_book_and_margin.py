"""the price book (prices), and margin: v_tenant_margin, v_api_equivalent
(issue 18 part 1; docs/sql.md#v_tenant_margin, docs/sql.md#v_api_equivalent)

- ``prices``: what tenants pay per million tokens (prompt, cached prompt, completion) and per
  request, per model; ``tenant_id`` NULL is the default list, a tenant's own row overrides it.
  A history, like gpu_rates: written by the ledger writer from the ``prices`` topic,
  ``price_id`` a hash of the content (ON CONFLICT DO NOTHING), never updated.
- The price in force for (tenant, model) at an instant t (``inferledger_price_at``): among the
  rows of that model with ``effective_from <= t < coalesce(effective_to, infinity)``, a row of
  the tenant before a default-list row; then the latest ``effective_from``; then the latest
  ``received_at`` (a correction published later wins); then ``price_id`` (deterministic).
- Charged (one rule, docs/sql.md#which-requests-are-charged): tokens of every request the
  ledger counts, whatever its status (ok, error, cancelled: what the engine processed or
  generated), at the price in force at the start of the bucket that counts them (the bucket
  holding finished_at); the per-request fee on completions (status ok) only.
- Revenue is computed from the journal (ledger_entries, each entry at the price in force at its
  bucket_start: prices change at any instant, not only at midnight); cost and cost_with_idle
  come from v_cost_per_completion_with_idle (the rollup).
- Tenants get no privilege on any of it (platform-internal): inferledger_apply_privileges()
  grants the reader SELECT on every relation and the tenant only on its listed ones; the writer
  gets INSERT on prices (0009's function re-created with the extended list).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

HERE = Path(__file__).resolve().parent


def _earlier(prefix: str) -> ModuleType:
    """An earlier migration's module (0009: the privileges function and its lists)."""
    (path,) = HERE.glob(f'{prefix}_*.py')
    spec = importlib.util.spec_from_file_location(f'inferledger_migration_{prefix}', path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ADDED_WRITES = {'prices': 'INSERT'}

PRICE_AT = """
CREATE FUNCTION inferledger_price_at(p_tenant text, p_model text, p_at timestamptz)
RETURNS SETOF prices LANGUAGE sql STABLE AS $$
    SELECT p.* FROM prices p
    WHERE p.model = p_model
      AND (p.tenant_id = p_tenant OR p.tenant_id IS NULL)
      AND p.effective_from <= p_at
      AND (p.effective_to IS NULL OR p_at < p.effective_to)
    ORDER BY p.tenant_id IS NULL, p.effective_from DESC, p.received_at DESC, p.price_id
    LIMIT 1
$$
"""

# what one journal entry's counts are charged at a price (per million tokens, per completion)
CHARGE = """(((e.prompt_tokens - e.cached_prompt_tokens) * p.prompt_per_million
      + e.cached_prompt_tokens * p.cached_prompt_per_million
      + e.completion_tokens * p.completion_per_million) * 0.000001
     + e.completions * coalesce(p.per_request, 0))"""

CHARGEABLE = """e.tenant_id IS NOT NULL
  AND (e.prompt_tokens <> 0 OR e.completion_tokens <> 0 OR e.cached_prompt_tokens <> 0
       OR e.completions <> 0)"""

V_TENANT_REVENUE = f"""
CREATE VIEW v_tenant_revenue AS
SELECT (e.bucket_start AT TIME ZONE 'UTC')::date AS day, e.tenant_id, e.model,
       coalesce(p.currency, e.currency)::varchar(3) AS currency,
       round(sum({CHARGE}), 12) AS revenue,
       coalesce(sum(e.prompt_tokens + e.completion_tokens) FILTER (WHERE p.price_id IS NULL),
                0)::bigint AS unpriced_tokens,
       coalesce(sum(e.completions) FILTER (WHERE p.price_id IS NULL), 0)::bigint
           AS unpriced_completions,
       count(DISTINCT p.price_id) AS prices_used
FROM ledger_entries e
LEFT JOIN LATERAL inferledger_price_at(e.tenant_id, e.model, e.bucket_start) p ON true
WHERE {CHARGEABLE}
GROUP BY 1, 2, 3, 4
"""

V_TENANT_MARGIN = """
CREATE VIEW v_tenant_margin AS
WITH cost AS (
    SELECT day, tenant_id, model, currency::varchar(3) AS currency, completions,
           failed_requests, amount AS cost, amount_with_idle AS cost_with_idle, has_unpriced
    FROM v_cost_per_completion_with_idle
    WHERE tenant_id IS NOT NULL
)
SELECT day, tenant_id, model, currency,
       r.revenue, c.cost, c.cost_with_idle,
       r.revenue - c.cost AS margin,
       r.revenue - c.cost_with_idle AS margin_with_idle,
       round((r.revenue - c.cost) * 100 / nullif(r.revenue, 0), 4) AS margin_pct,
       round((r.revenue - c.cost_with_idle) * 100 / nullif(r.revenue, 0), 4)
           AS margin_pct_with_idle,
       coalesce(c.completions, 0)::bigint AS completions,
       coalesce(c.failed_requests, 0)::bigint AS failed_requests,
       coalesce(r.unpriced_tokens, 0) AS unpriced_tokens,
       coalesce(r.unpriced_completions, 0) AS unpriced_completions,
       coalesce(r.unpriced_tokens, 0) + coalesce(r.unpriced_completions, 0) > 0
           AS unpriced_revenue,
       coalesce(c.has_unpriced, false) AS unpriced_cost
FROM v_tenant_revenue r
FULL JOIN cost c USING (day, tenant_id, model, currency)
"""

# tokens per ledger currency, at every default-list price (a hosted model's list price: the
# LiteLLM map, ingested with `ingest prices --format litellm`) in force at each bucket
V_API_EQUIVALENT = f"""
CREATE VIEW v_api_equivalent AS
WITH api AS (
    SELECT DISTINCT model AS api_model FROM prices WHERE tenant_id IS NULL
), priced AS (
    SELECT (e.bucket_start AT TIME ZONE 'UTC')::date AS day, e.tenant_id, e.model,
           e.currency::varchar(3) AS currency, a.api_model, p.currency AS api_currency,
           e.prompt_tokens, e.cached_prompt_tokens, e.completion_tokens, e.completions,
           {CHARGE} AS charge, p.price_id
    FROM ledger_entries e
    CROSS JOIN api a
    LEFT JOIN LATERAL inferledger_price_at(NULL, a.api_model, e.bucket_start) p ON true
    WHERE {CHARGEABLE}
), sums AS (
    SELECT day, tenant_id, model, currency, api_model, api_currency,
           sum(prompt_tokens)::bigint AS prompt_tokens,
           sum(cached_prompt_tokens)::bigint AS cached_prompt_tokens,
           sum(completion_tokens)::bigint AS completion_tokens,
           sum(completions)::bigint AS completions,
           round(sum(charge), 12) AS api_cost
    FROM priced
    GROUP BY 1, 2, 3, 4, 5, 6
)
SELECT s.day, s.tenant_id, s.model, s.api_model, s.api_currency, s.api_cost,
       s.currency, c.amount AS cost, c.amount_with_idle AS cost_with_idle,
       CASE WHEN s.api_currency = s.currency THEN s.api_cost - c.amount_with_idle END
           AS saving_with_idle,
       s.prompt_tokens, s.cached_prompt_tokens, s.completion_tokens, s.completions,
       s.api_currency IS NULL AS unpriced
FROM sums s
LEFT JOIN v_cost_per_completion_with_idle c
  ON c.day = s.day AND c.tenant_id = s.tenant_id AND c.model = s.model
 AND c.currency = s.currency
"""


def upgrade() -> None:
    op.create_table(
        'prices',
        sa.Column('price_id', sa.String(64), nullable=False),
        sa.Column('tenant_id', sa.Text()),
        sa.Column('model', sa.Text(), nullable=False),
        sa.Column('currency', sa.String(3), nullable=False),
        sa.Column('prompt_per_million', sa.Numeric(38, 12), nullable=False),
        sa.Column('cached_prompt_per_million', sa.Numeric(38, 12), nullable=False),
        sa.Column('completion_per_million', sa.Numeric(38, 12), nullable=False),
        sa.Column('per_request', sa.Numeric(38, 12)),
        sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
        sa.Column('effective_to', sa.DateTime(timezone=True)),
        sa.Column('source', sa.Text(), nullable=False),
        sa.Column(
            'received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
            nullable=False,
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f('ck_prices_currency')),
        sa.CheckConstraint(
            'prompt_per_million >= 0 AND cached_prompt_per_million >= 0 '
            'AND completion_per_million >= 0 AND coalesce(per_request, 0) >= 0',
            name=op.f('ck_prices_non_negative'),
        ),
        sa.CheckConstraint(
            'effective_to IS NULL OR effective_to > effective_from',
            name=op.f('ck_prices_interval'),
        ),
        sa.PrimaryKeyConstraint('price_id', name=op.f('pk_prices')),
    )
    op.create_index('ix_prices_model_tenant_from', 'prices',
                    ['model', 'tenant_id', 'effective_from'])  # fmt: skip
    for sql in (PRICE_AT, V_TENANT_REVENUE, V_TENANT_MARGIN, V_API_EQUIVALENT):
        op.execute(sql)
    _privileges({**_earlier('0009').WRITER_WRITES, **ADDED_WRITES})


def _privileges(writes: dict[str, str]) -> None:
    m9 = _earlier('0009')
    m9.WRITER_WRITES = writes
    schema, name = m9._schema()
    op.execute(m9._apply_privileges(schema, name))
    op.execute('SELECT inferledger_apply_privileges()')


def downgrade() -> None:
    for view in ('v_api_equivalent', 'v_tenant_margin', 'v_tenant_revenue'):
        op.execute(f'DROP VIEW IF EXISTS {view}')
    op.execute('DROP FUNCTION IF EXISTS inferledger_price_at(text, text, timestamptz)')
    op.drop_table('prices')
    _privileges(dict(_earlier('0009').WRITER_WRITES))
