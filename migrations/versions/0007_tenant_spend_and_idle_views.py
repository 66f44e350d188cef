"""the views v_tenant_spend and v_cost_per_completion_with_idle (DESIGN.md section 4)

Both are additive: no table changes. Each resource-day's idle cost is shared among its tenants
by v_tenant_idle_share (migration 0006); v_cost_per_completion_with_idle splits each tenant's
share further among its models, so that over every row of the view, unshared idle included, a
day's amount_with_idle adds up to the day's ledger amounts exactly.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 10:30:00
"""

from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# A tenant's spend per UTC day and currency: the sum of its entries' amounts (every kind, so
# credits, late adjustments and reconciliations count), and its idle share of that day (the sum
# of v_tenant_idle_share over the resources it used). The two parts meet in a UNION ALL grouped
# by (tenant_id, currency, day), so a filter on those columns reaches both. Month totals:
# GROUP BY date_trunc('month', day).
V_TENANT_SPEND = """
CREATE VIEW v_tenant_spend AS
WITH parts AS (
    SELECT tenant_id, currency, (bucket_start AT TIME ZONE 'UTC')::date AS day, amount,
           0::numeric(38,12) AS idle_share, cost_basis = 'unpriced' AS unpriced
    FROM ledger_entries
    WHERE tenant_id IS NOT NULL
    UNION ALL
    SELECT tenant_id, currency, day, 0::numeric(38,12), idle_share, false
    FROM v_tenant_idle_share
)
SELECT tenant_id, currency, day,
       sum(amount) AS amount,
       sum(idle_share) AS idle_share,
       sum(amount) + sum(idle_share) AS amount_with_idle,
       bool_or(unpriced) AS has_unpriced
FROM parts
GROUP BY tenant_id, currency, day
"""

# v_cost_per_completion's columns, in its order, then the idle share:
#
# - Each tenant's share of a resource-day's idle cost (v_tenant_idle_share) is split among the
#   tenant's models on that resource-day in proportion to their busy cost there (the sum of the
#   amounts of the tenant's entries of that model, every kind). Negative net busy cost weighs 0;
#   when none of the tenant's models has a positive busy cost there, they share equally.
#   Cumulative rounding, as in v_tenant_idle_share: with the models ordered by model and U_j
#   the running sum of the weights, share_j = round(S * U_j / U, 12) - round(S * U_{j-1} / U, 12),
#   which telescopes to the tenant's share S exactly (S has 12 places).
# - Resource-days with idle entries and no tenant entry (in that currency) have nobody to share
#   with: their idle cost stays unshared, in one row per day and currency with tenant_id and
#   model NULL, amount 0, idle_share the unshared idle cost, and unshared_idle true.
#
# So, per day and currency, the sum of amount_with_idle over the view equals the sum of the
# ledger's amounts exactly, and the sum of idle_share equals the sum of the idle entries.
V_COST_PER_COMPLETION_WITH_IDLE = """
CREATE VIEW v_cost_per_completion_with_idle AS
WITH model_busy AS (
    SELECT (bucket_start AT TIME ZONE 'UTC')::date AS day, resource_id, currency, tenant_id,
           model, sum(amount) AS busy_cost
    FROM ledger_entries
    WHERE tenant_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
), weighted AS (
    SELECT m.day, m.resource_id, m.currency, m.tenant_id, m.model, s.idle_share AS tenant_share,
           CASE WHEN sum(greatest(m.busy_cost, 0))
                         OVER (PARTITION BY m.day, m.resource_id, m.currency, m.tenant_id) > 0
                THEN greatest(m.busy_cost, 0) ELSE 1 END AS weight
    FROM model_busy m
    JOIN v_tenant_idle_share s USING (day, resource_id, currency, tenant_id)
), running AS (
    SELECT *,
           sum(weight) OVER (PARTITION BY day, resource_id, currency, tenant_id ORDER BY model)
               AS upto,
           sum(weight) OVER (PARTITION BY day, resource_id, currency, tenant_id) AS total
    FROM weighted
), unshared AS (
    SELECT day, currency, sum(idle_cost) AS idle_cost
    FROM (
        SELECT (bucket_start AT TIME ZONE 'UTC')::date AS day, resource_id, currency,
               sum(amount) FILTER (WHERE tenant_id IS NULL) AS idle_cost,
               count(tenant_id) AS tenant_entries
        FROM ledger_entries
        GROUP BY 1, 2, 3
    ) r
    WHERE tenant_entries = 0
    GROUP BY day, currency
), parts AS (
    SELECT (bucket_start AT TIME ZONE 'UTC')::date AS day, tenant_id, model, currency,
           completions, failed_requests, prompt_tokens, cached_prompt_tokens, completion_tokens,
           amount, 0::numeric(38,12) AS idle_share, cost_basis = 'unpriced' AS unpriced
    FROM ledger_entries
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


def upgrade() -> None:
    op.execute(V_TENANT_SPEND)
    op.execute(V_COST_PER_COMPLETION_WITH_IDLE)


def downgrade() -> None:
    op.execute('DROP VIEW IF EXISTS v_cost_per_completion_with_idle')
    op.execute('DROP VIEW IF EXISTS v_tenant_spend')
