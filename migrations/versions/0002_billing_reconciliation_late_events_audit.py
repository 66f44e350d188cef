"""billing reconciliation late events audit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 02:28:11.110631
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

ALLOCATED_CATEGORIES = "('usage', 'credit', 'adjustment')"

V_GPU_UTILIZATION = """
CREATE VIEW v_gpu_utilization AS
SELECT resource_id,
       date_trunc('hour', bucket_start) AS hour,
       currency,
       round(sum(busy_seconds) FILTER (WHERE tenant_id IS NULL)
             / nullif(count(DISTINCT bucket_start) * max(bucket_seconds), 0), 6) AS busy_fraction,
       sum(amount) AS cost,
       coalesce(sum(amount) FILTER (WHERE tenant_id IS NULL), 0) AS idle_cost,
       sum(amount) FILTER (WHERE cost_basis = 'billed') AS billed_cost,
       count(DISTINCT bucket_start) AS buckets
FROM ledger_entries
GROUP BY resource_id, date_trunc('hour', bucket_start), currency
"""

V_UNALLOCATED_BILLING = f"""
CREATE VIEW v_unallocated_billing AS
SELECT * FROM (
    SELECT b.*,
           CASE
             WHEN b.resource_id IS NULL THEN 'no resource id'
             WHEN b.charge_category NOT IN {ALLOCATED_CATEGORIES}
               THEN 'charge category ' || b.charge_category || ' is not allocated to tenants'
             WHEN b.period_end <= b.period_start THEN 'empty charge period'
             WHEN NOT EXISTS (SELECT 1 FROM resources r WHERE r.resource_id = b.resource_id)
              AND NOT EXISTS (SELECT 1 FROM ledger_entries e
                              WHERE e.resource_id = b.resource_id)
               THEN 'not a known GPU resource'
           END AS reason
    FROM billing_lines b
) lines
WHERE reason IS NOT NULL
"""


def upgrade() -> None:
    op.create_table('attribution_state',
    sa.Column('resource_id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('bucket', 'rate', 'bill')", name=op.f('ck_attribution_state_kind')),
    sa.PrimaryKeyConstraint('resource_id', 'kind', 'key', name=op.f('pk_attribution_state'))
    )
    op.create_table('billing_lines',
    sa.Column('line_id', sa.String(length=128), nullable=False),
    sa.Column('resource_id', sa.Text(), nullable=True),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cost', sa.Numeric(precision=38, scale=12), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('charge_category', sa.Text(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=True),
    sa.Column('sku', sa.Text(), nullable=True),
    sa.Column('pricing_category', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('line_id', name=op.f('pk_billing_lines'))
    )
    op.create_index('ix_billing_lines_resource_period', 'billing_lines', ['resource_id', 'period_start'], unique=False)
    op.create_table('counted_events',
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('resource_id', sa.Text(), nullable=False),
    sa.Column('bucket_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('event_id', 'resource_id', 'bucket_start', name=op.f('pk_counted_events'))
    )
    op.add_column('ledger_entries', sa.Column('row_hash', sa.String(length=64), server_default=sa.text("''"), nullable=False))
    op.execute(V_GPU_UTILIZATION)
    op.execute(V_UNALLOCATED_BILLING)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_unallocated_billing")
    op.execute("DROP VIEW IF EXISTS v_gpu_utilization")
    op.drop_column('ledger_entries', 'row_hash')
    op.drop_table('counted_events')
    op.drop_index('ix_billing_lines_resource_period', table_name='billing_lines')
    op.drop_table('billing_lines')
    op.drop_table('attribution_state')
