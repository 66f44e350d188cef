"""attribution outbox: allocations decided and stored with the state, until Kafka has them;
attribution progress: how far each worker has closed buckets, for the audit;
resource owners: which worker may store decisions of a resource (fencing at a rebalance)

Before, the attribution processor published a step's allocations, then stored the state that
step changed. A crash between the two made the rerun decide the same buckets again, possibly
with other events in them (arrival across partitions is not deterministic), under the same entry
ids: the ledger kept the first decision and the later one's counts were lost. Now the state and
the allocations are stored in one transaction, then published, then deleted from the outbox.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'attribution_outbox',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('resource_id', sa.Text(), nullable=False),
        sa.Column('payload', sa.LargeBinary(), nullable=False),
        sa.Column(
            'created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_attribution_outbox')),
    )
    op.create_index(
        op.f('ix_attribution_outbox_resource_id'), 'attribution_outbox', ['resource_id']
    )
    op.create_table(
        'attribution_progress',
        sa.Column('worker_id', sa.Text(), nullable=False),
        sa.Column('closed_through', sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            'updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False
        ),
        sa.PrimaryKeyConstraint('worker_id', name=op.f('pk_attribution_progress')),
    )
    op.create_table(
        'resource_owners',
        sa.Column('resource_id', sa.Text(), nullable=False),
        sa.Column('worker_id', sa.Text(), nullable=False),
        sa.Column(
            'claimed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False
        ),
        sa.PrimaryKeyConstraint('resource_id', name=op.f('pk_resource_owners')),
    )


def downgrade() -> None:
    op.drop_table('resource_owners')
    op.drop_table('attribution_progress')
    op.drop_index(op.f('ix_attribution_outbox_resource_id'), table_name='attribution_outbox')
    op.drop_table('attribution_outbox')
