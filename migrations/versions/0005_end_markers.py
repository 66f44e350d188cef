"""end markers: the end-of-input markers the ledger writer has read, stored with what came
before them on their partition

``inferledger run --until-idle`` beside a running ``inferledger up`` cannot run processors of
its own (they would join the running ones' consumer groups). It writes stamped end markers to
the input topics instead; the streaming attribution processor closes the buckets before their
time and passes them on to cost-allocations; the ledger writer stores them here in the same
transaction as the entries before them. The command waits for its run's rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'end_markers',
        sa.Column('run_id', sa.String(length=128), nullable=False),
        sa.Column('topic', sa.Text(), nullable=False),
        sa.Column('partition', sa.Integer(), nullable=False),
        sa.Column(
            'seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False
        ),
        sa.PrimaryKeyConstraint('run_id', 'topic', 'partition', name=op.f('pk_end_markers')),
    )


def downgrade() -> None:
    op.drop_table('end_markers')
