"""counted events stored as one row per counted set, with a view of one row per event

One row per counted event (a primary-key index entry per event) was the ledger writer's largest
Postgres cost. Now each allocation message's counted events are one row of arrays, keyed by a
hash of its content (so a replayed message is still written once); ``counted_events`` stays, as
a view with the same columns.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

V_COUNTED_EVENTS = """
CREATE VIEW counted_events AS
SELECT e.event_id, s.resource_id, s.bucket_start, s.statuses[e.n] AS status, s.recorded_at
FROM counted_event_sets s
CROSS JOIN LATERAL unnest(s.event_ids) WITH ORDINALITY AS e(event_id, n)
"""


def upgrade() -> None:
    op.create_table('counted_event_sets',
    sa.Column('resource_id', sa.Text(), nullable=False),
    sa.Column('bucket_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('set_id', sa.String(length=64), nullable=False),
    sa.Column('event_ids', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('statuses', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('cardinality(event_ids) = cardinality(statuses)', name=op.f('ck_counted_event_sets_aligned')),
    sa.PrimaryKeyConstraint('resource_id', 'bucket_start', 'set_id', name=op.f('pk_counted_event_sets'))
    )
    # what was counted before: one set per resource and bucket
    op.execute("""
        INSERT INTO counted_event_sets (resource_id, bucket_start, set_id, event_ids, statuses,
                                        recorded_at)
        SELECT resource_id, bucket_start,
               'migrated-' || md5(string_agg(event_id || ':' || status, ',' ORDER BY event_id)),
               array_agg(event_id ORDER BY event_id), array_agg(status ORDER BY event_id),
               min(recorded_at)
        FROM counted_events GROUP BY resource_id, bucket_start
    """)
    op.drop_table('counted_events')
    op.execute(V_COUNTED_EVENTS)


def downgrade() -> None:
    op.execute("ALTER VIEW counted_events RENAME TO counted_events_view")
    op.create_table('counted_events',
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('resource_id', sa.Text(), nullable=False),
    sa.Column('bucket_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('event_id', 'resource_id', 'bucket_start', name=op.f('pk_counted_events'))
    )
    op.execute("""
        INSERT INTO counted_events (event_id, resource_id, bucket_start, status, recorded_at)
        SELECT event_id, resource_id, bucket_start, status, recorded_at FROM counted_events_view
        ON CONFLICT DO NOTHING
    """)
    op.execute("DROP VIEW counted_events_view")
    op.drop_table('counted_event_sets')
