"""initial ledger schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 02:06:29.146067
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = """
CREATE FUNCTION ledger_entries_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % is not allowed (write a correcting entry)',
        TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_entries_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_refuse_change();
CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_refuse_change();
"""

V_COST_PER_COMPLETION = """
CREATE VIEW v_cost_per_completion AS
SELECT (bucket_start AT TIME ZONE 'UTC')::date AS day,
       tenant_id,
       model,
       currency,
       sum(completions)::bigint AS completions,
       sum(failed_requests)::bigint AS failed_requests,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(cached_prompt_tokens)::bigint AS cached_prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       sum(amount) AS amount,
       round(sum(amount) / nullif(sum(completions), 0), 12) AS cost_per_completion,
       round(sum(amount) * 1000 / nullif(sum(prompt_tokens + completion_tokens), 0), 12)
           AS cost_per_1k_tokens,
       bool_or(cost_basis = 'unpriced') AS has_unpriced
FROM ledger_entries
WHERE tenant_id IS NOT NULL
GROUP BY 1, 2, 3, 4
"""


def upgrade() -> None:
    op.create_table('consumer_offsets',
    sa.Column('consumer_group', sa.Text(), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.Column('next_offset', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('consumer_group', 'topic', 'partition', name=op.f('pk_consumer_offsets'))
    )
    op.create_table('gpu_rates',
    sa.Column('rate_id', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.Text(), nullable=False),
    sa.Column('price_per_hour', sa.Numeric(precision=38, scale=12), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('effective_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=True),
    sa.Column('instance_type', sa.Text(), nullable=True),
    sa.Column('gpu_model', sa.Text(), nullable=True),
    sa.Column('gpu_count', sa.Integer(), nullable=True),
    sa.Column('region', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('rate_id', name=op.f('pk_gpu_rates'))
    )
    op.create_index('ix_gpu_rates_resource_from', 'gpu_rates', ['resource_id', 'effective_from'], unique=False)
    op.create_table('ledger_entries',
    sa.Column('entry_id', sa.String(length=64), nullable=False),
    sa.Column('entry_kind', sa.Text(), nullable=False),
    sa.Column('cost_basis', sa.Text(), nullable=False),
    sa.Column('tenant_id', sa.Text(), nullable=True),
    sa.Column('model', sa.Text(), nullable=True),
    sa.Column('resource_id', sa.Text(), nullable=False),
    sa.Column('bucket_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('bucket_seconds', sa.Integer(), nullable=False),
    sa.Column('completions', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('failed_requests', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('prompt_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('cached_prompt_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('completion_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('work_units', sa.Numeric(precision=38, scale=6), server_default=sa.text('0'), nullable=False),
    sa.Column('busy_seconds', sa.Numeric(precision=20, scale=6), server_default=sa.text('0'), nullable=False),
    sa.Column('amount', sa.Numeric(precision=38, scale=12), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('billing_line_ids', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("cost_basis IN ('provisional', 'billed', 'unpriced')", name=op.f('ck_ledger_entries_cost_basis')),
    sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f('ck_ledger_entries_currency')),
    sa.CheckConstraint("entry_kind IN ('usage', 'idle', 'late_adjustment', 'reconciliation')", name=op.f('ck_ledger_entries_entry_kind')),
    sa.PrimaryKeyConstraint('entry_id', name=op.f('pk_ledger_entries'))
    )
    op.create_index('ix_ledger_entries_resource_bucket', 'ledger_entries', ['resource_id', 'bucket_start'], unique=False)
    op.create_index('ix_ledger_entries_tenant_bucket', 'ledger_entries', ['tenant_id', 'bucket_start'], unique=False)
    op.create_table('resources',
    sa.Column('resource_id', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=True),
    sa.Column('instance_type', sa.Text(), nullable=True),
    sa.Column('gpu_model', sa.Text(), nullable=True),
    sa.Column('gpu_count', sa.Integer(), nullable=True),
    sa.Column('region', sa.Text(), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('resource_id', name=op.f('pk_resources'))
    )
    # The ledger is append-only: the database itself refuses UPDATE, DELETE and TRUNCATE.
    op.execute(APPEND_ONLY)
    op.execute(V_COST_PER_COMPLETION)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_cost_per_completion")
    op.execute("DROP FUNCTION IF EXISTS ledger_entries_refuse_change() CASCADE")
    op.drop_table('resources')
    op.drop_index('ix_ledger_entries_tenant_bucket', table_name='ledger_entries')
    op.drop_index('ix_ledger_entries_resource_bucket', table_name='ledger_entries')
    op.drop_table('ledger_entries')
    op.drop_index('ix_gpu_rates_resource_from', table_name='gpu_rates')
    op.drop_table('gpu_rates')
    op.drop_table('consumer_offsets')
