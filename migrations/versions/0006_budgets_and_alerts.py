"""budgets and alerts: budgets, budget_alerts (fired once), alert_deliveries (one row per
attempt), the views v_tenant_idle_share and v_budget_status

Budgets are soft-deleted (``deleted_at``) so that their alerts keep their budget. An alert is
unique per budget, period, kind and subject (the normalized threshold, '' for a forecast, the
model for an anomaly): the database, not the processor, guarantees that an alert fires once,
whatever restarts, replays or concurrent processors happen.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# Webhook targets: http or https with a host, nothing else (no file:, gopher:, ...). Also
# checked by the CLI; here so that `INSERT INTO budgets` by hand cannot bypass it.
HTTP_URLS = r"""
CREATE FUNCTION inferledger_http_urls(urls text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT coalesce(bool_and(u ~* '^https?://[^/?#@:[:space:]][^/?#[:space:]]*([/?#][^[:space:]]*)?$'), true)
    FROM unnest(urls) AS u
$$
"""

# Each tenant's share of a resource-day's idle cost, in proportion to its busy cost (the sum of
# its entries' amounts on that resource-day, every kind). Negative net busy cost weighs 0; when
# no tenant has a positive busy cost, the tenants present share equally. Resource-days with no
# tenant entry are absent: their idle cost stays unshared.
#
# Rounding: cumulative rounding. With the tenants ordered by tenant_id and W_i the running sum
# of the weights, share_i = round(idle * W_i / W, 12) - round(idle * W_{i-1} / W, 12). The sum
# telescopes to round(idle * W / W, 12) = idle (idle has 12 places), so the shares of a
# resource-day add up to its idle cost exactly, each is within 1e-12 of its exact proportion,
# and none is negative when the idle cost is not.
V_TENANT_IDLE_SHARE = """
CREATE VIEW v_tenant_idle_share AS
WITH busy AS (
    SELECT (bucket_start AT TIME ZONE 'UTC')::date AS day, resource_id, currency, tenant_id,
           sum(amount) AS busy_cost
    FROM ledger_entries
    WHERE tenant_id IS NOT NULL
    GROUP BY 1, 2, 3, 4
), idle AS (
    SELECT (bucket_start AT TIME ZONE 'UTC')::date AS day, resource_id, currency,
           sum(amount) AS idle_cost
    FROM ledger_entries
    WHERE tenant_id IS NULL
    GROUP BY 1, 2, 3
), weighted AS (
    SELECT b.day, b.resource_id, b.currency, b.tenant_id, b.busy_cost, i.idle_cost,
           CASE WHEN sum(greatest(b.busy_cost, 0))
                         OVER (PARTITION BY b.day, b.resource_id, b.currency) > 0
                THEN greatest(b.busy_cost, 0) ELSE 1 END AS weight
    FROM busy b
    JOIN idle i USING (day, resource_id, currency)
), running AS (
    SELECT *,
           sum(weight) OVER (PARTITION BY day, resource_id, currency ORDER BY tenant_id)
               AS upto,
           sum(weight) OVER (PARTITION BY day, resource_id, currency) AS total
    FROM weighted
)
SELECT day, resource_id, tenant_id, currency, busy_cost, idle_cost AS resource_idle_cost,
       round(idle_cost * upto / total, 12) - round(idle_cost * (upto - weight) / total, 12)
           AS idle_share
FROM running
"""

# A budget's spend over [p_from, p_to): the sum of the amounts of its scope's entries over
# buckets starting in it (its tenant's, or every tenant's for an all-tenants budget; every
# entry kind, so credits and reconciliations lower it), plus, with include_idle_share, its idle
# share: for a tenant budget, its share of each resource-day's idle cost (v_tenant_idle_share)
# times the part of that day's idle cost that lies in the window (the whole share for a whole
# day, as in any period); for an all-tenants budget, every idle entry. The one definition of a
# period's spend: v_budget_status and the alerts processor both call it.
BUDGET_SPEND = """
CREATE FUNCTION inferledger_budget_spend(p_budget text, p_from timestamptz, p_to timestamptz)
RETURNS numeric LANGUAGE sql STABLE AS $$
WITH b AS (
    SELECT tenant_id, currency, include_idle_share FROM budgets WHERE budget_id = p_budget
), direct AS (
    SELECT coalesce(sum(e.amount), 0) AS s
    FROM b
    JOIN ledger_entries e
      ON e.currency = b.currency AND e.bucket_start >= p_from AND e.bucket_start < p_to
     AND ((b.tenant_id IS NOT NULL AND e.tenant_id = b.tenant_id)
          OR (b.tenant_id IS NULL AND (e.tenant_id IS NOT NULL OR b.include_idle_share)))
), idle_window AS (
    SELECT (bucket_start AT TIME ZONE 'UTC')::date AS day, resource_id, currency,
           sum(amount) AS window_idle
    FROM ledger_entries
    WHERE tenant_id IS NULL AND bucket_start >= p_from AND bucket_start < p_to
    GROUP BY 1, 2, 3
), shared AS (
    SELECT coalesce(sum(CASE WHEN w.window_idle = x.resource_idle_cost THEN x.idle_share
                             ELSE round(x.idle_share * w.window_idle
                                        / nullif(x.resource_idle_cost, 0), 12) END), 0) AS s
    FROM b
    JOIN v_tenant_idle_share x ON x.tenant_id = b.tenant_id AND x.currency = b.currency
    JOIN idle_window w
      ON w.day = x.day AND w.resource_id = x.resource_id AND w.currency = x.currency
    WHERE b.include_idle_share AND b.tenant_id IS NOT NULL
      -- the window's days only (a qual on the view's partitioning columns: pushed down)
      AND x.day >= (p_from AT TIME ZONE 'UTC')::date AND x.day <= (p_to AT TIME ZONE 'UTC')::date
)
SELECT direct.s + shared.s FROM direct, shared
$$
"""

# The current period of every budget (not deleted) at now(), UTC calendar-aligned, its spend,
# and the forecast rule (docs/budgets.md):
#   forecast_spend = spend + trailing_spend / covered * (period_end - now())
# where trailing_spend is the spend over [now() - 24 h, now()), covered = min(24 h, now() - the
# scope's first bucket), NULL when covered < 1 h.
V_BUDGET_STATUS = """
CREATE VIEW v_budget_status AS
WITH b AS (
    SELECT budget_id, name, tenant_id, period, amount, currency, include_idle_share,
           (date_trunc(period, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS period_start,
           ((date_trunc(period, now() AT TIME ZONE 'UTC')
             + CASE period WHEN 'day' THEN interval '1 day'
                           WHEN 'week' THEN interval '1 week'
                           ELSE interval '1 month' END) AT TIME ZONE 'UTC') AS period_end
    FROM budgets
    WHERE deleted_at IS NULL
), fired AS (
    SELECT a.budget_id, count(*) AS alerts_fired
    FROM budget_alerts a
    JOIN b ON b.budget_id = a.budget_id AND a.period_start = b.period_start
    GROUP BY a.budget_id
), totals AS (
    SELECT b.*,
           inferledger_budget_spend(b.budget_id, b.period_start, b.period_end) AS spend,
           inferledger_budget_spend(b.budget_id, now() - interval '24 hours', now())
               AS trailing_spend,
           now() - (
               SELECT min(e.bucket_start) FROM ledger_entries e
               WHERE e.currency = b.currency
                 AND ((b.tenant_id IS NOT NULL AND e.tenant_id = b.tenant_id)
                      OR (b.tenant_id IS NULL
                          AND (e.tenant_id IS NOT NULL OR b.include_idle_share)))) AS since_first,
           coalesce(f.alerts_fired, 0) AS alerts_fired
    FROM b
    LEFT JOIN fired f USING (budget_id)
)
SELECT budget_id, name, tenant_id, period, period_start, period_end, spend, amount AS budget,
       currency,
       round(spend / amount, 6) AS spent_fraction,
       CASE WHEN since_first >= interval '1 hour'  -- NULL (no data) too: no forecast
            THEN round(spend + trailing_spend
                               / extract(epoch FROM least(interval '24 hours', since_first))
                               * extract(epoch FROM (period_end - now())), 12)
       END AS forecast_spend,
       alerts_fired,
       include_idle_share
FROM totals
"""


def upgrade() -> None:
    op.execute(HTTP_URLS)
    op.create_table(
        'budgets',
        sa.Column('budget_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('tenant_id', sa.Text(), nullable=True),
        sa.Column('period', sa.Text(), nullable=False),
        sa.Column('amount', sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column(
            'thresholds',
            postgresql.ARRAY(sa.Numeric()),
            server_default=sa.text("'{0.5,0.8,1.0}'"),
            nullable=False,
        ),
        sa.Column(
            'include_idle_share', sa.Boolean(), server_default=sa.text('false'), nullable=False
        ),
        sa.Column(
            'webhooks', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column('webhook_secret', sa.Text(), nullable=True),
        sa.Column(
            'created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False
        ),
        sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("period IN ('day', 'week', 'month')", name=op.f('ck_budgets_period')),
        sa.CheckConstraint('amount > 0', name=op.f('ck_budgets_amount')),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f('ck_budgets_currency')),
        sa.CheckConstraint(
            'array_position(thresholds, NULL) IS NULL AND 0 < ALL (thresholds)',
            name=op.f('ck_budgets_thresholds'),
        ),
        sa.CheckConstraint('inferledger_http_urls(webhooks)', name=op.f('ck_budgets_webhooks')),
        sa.PrimaryKeyConstraint('budget_id', name=op.f('pk_budgets')),
    )
    op.create_table(
        'budget_alerts',
        sa.Column('alert_id', sa.String(length=128), nullable=False),
        sa.Column('budget_id', sa.String(length=64), nullable=False),
        sa.Column('tenant_id', sa.Text(), nullable=True),
        sa.Column('kind', sa.Text(), nullable=False),
        sa.Column('subject', sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
        sa.Column('threshold', sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column('spend', sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column('budget', sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('forecast_spend', sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column('baseline', sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column('observed', sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column(
            'fired_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False
        ),
        sa.CheckConstraint(
            "kind IN ('threshold', 'forecast', 'anomaly')", name=op.f('ck_budget_alerts_kind')
        ),
        sa.ForeignKeyConstraint(
            ['budget_id'],
            ['budgets.budget_id'],
            name=op.f('fk_budget_alerts_budget_id_budgets'),
        ),
        sa.PrimaryKeyConstraint('alert_id', name=op.f('pk_budget_alerts')),
        sa.UniqueConstraint(
            'budget_id',
            'period_start',
            'kind',
            'subject',
            name=op.f('uq_budget_alerts_budget_id_period_start_kind_subject'),
        ),
    )
    op.create_table(
        'alert_deliveries',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('alert_id', sa.String(length=128), nullable=False),
        sa.Column('target', sa.Text(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column(
            'attempted_at',
            sa.DateTime(timezone=True),
            server_default=sa.text('now()'),
            nullable=False,
        ),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('delivered', sa.Boolean(), server_default=sa.text('false'), nullable=False),
        sa.ForeignKeyConstraint(
            ['alert_id'],
            ['budget_alerts.alert_id'],
            name=op.f('fk_alert_deliveries_alert_id_budget_alerts'),
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_deliveries')),
    )
    op.create_index(
        op.f('ix_alert_deliveries_alert_id_target'), 'alert_deliveries', ['alert_id', 'target']
    )
    # the alerts processor reads the entries recorded since its previous pass, every second
    op.create_index('ix_ledger_entries_recorded_at', 'ledger_entries', ['recorded_at'])
    op.execute(V_TENANT_IDLE_SHARE)
    op.execute(BUDGET_SPEND)
    op.execute(V_BUDGET_STATUS)


def downgrade() -> None:
    op.execute('DROP VIEW IF EXISTS v_budget_status')
    op.execute('DROP FUNCTION IF EXISTS inferledger_budget_spend(text, timestamptz, timestamptz)')
    op.execute('DROP VIEW IF EXISTS v_tenant_idle_share')
    op.drop_index('ix_ledger_entries_recorded_at', table_name='ledger_entries')
    op.drop_index(op.f('ix_alert_deliveries_alert_id_target'), table_name='alert_deliveries')
    op.drop_table('alert_deliveries')
    op.drop_table('budget_alerts')
    op.drop_table('budgets')
    op.execute('DROP FUNCTION IF EXISTS inferledger_http_urls(text[])')
