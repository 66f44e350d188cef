"""Table definitions. The database schema belongs to the Alembic migrations in ``migrations/``;
these definitions mirror them (``alembic check`` fails when the two drift) and serve queries."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

AMOUNT = Numeric(38, 12)
GOODPUT_COUNTS = ("completions_within_slo", "cancelled_requests")
GOODPUT_AMOUNTS = ("slo_miss_amount", "failed_amount", "cancelled_amount")

# Partitioned by month of bucket_start (migration 0008): ledger_entries_yYYYYmMM partitions and
# ledger_entries_default, which migrations/env.py leaves out of ``alembic check``.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("entry_id", String(64), primary_key=True),
    Column("entry_kind", Text, nullable=False),
    Column("cost_basis", Text, nullable=False),
    Column("tenant_id", Text),
    Column("model", Text),
    Column("resource_id", Text, nullable=False),
    Column("bucket_start", DateTime(timezone=True), primary_key=True),
    Column("bucket_seconds", Integer, nullable=False),
    Column("completions", Integer, nullable=False, server_default=text("0")),
    Column("failed_requests", Integer, nullable=False, server_default=text("0")),
    Column("prompt_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("cached_prompt_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("completion_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("work_units", Numeric(38, 6), nullable=False, server_default=text("0")),
    Column("busy_seconds", Numeric(20, 6), nullable=False, server_default=text("0")),
    Column("amount", AMOUNT, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("billing_line_ids", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("row_hash", String(64), nullable=False, server_default=text("''")),
    # goodput and waste (migration 0011; services/contracts/ledger.py LEDGER_ENTRY_GOODPUT)
    Column("completions_within_slo", Integer, nullable=False, server_default=text("0")),
    Column("cancelled_requests", Integer, nullable=False, server_default=text("0")),
    Column("slo_miss_amount", AMOUNT, nullable=False, server_default=text("0")),
    Column("failed_amount", AMOUNT, nullable=False, server_default=text("0")),
    Column("cancelled_amount", AMOUNT, nullable=False, server_default=text("0")),
    CheckConstraint(
        "entry_kind IN ('usage', 'idle', 'late_adjustment', 'reconciliation')", name="entry_kind"
    ),
    CheckConstraint("cost_basis IN ('provisional', 'billed', 'unpriced')", name="cost_basis"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    Index("ix_ledger_entries_tenant_bucket", "tenant_id", "bucket_start"),
    Index("ix_ledger_entries_resource_bucket", "resource_id", "bucket_start"),
    # what the alerts processor reads each pass: entries recorded since its previous pass
    Index("ix_ledger_entries_recorded_at", "recorded_at"),
    postgresql_partition_by="RANGE (bucket_start)",
)

# The daily rollup of the journal, added to by a trigger on ledger_entries in the inserting
# transaction (migration 0008); ``inferledger audit`` checks it against the journal.
ledger_daily = Table(
    "ledger_daily",
    metadata,
    Column("day", Date, nullable=False),
    Column("resource_id", Text, nullable=False),
    Column("tenant_id", Text),
    Column("model", Text),
    Column("currency", String(3), nullable=False),
    *(
        Column(name, BigInteger, nullable=False)
        for name in (
            "entries",
            "unpriced_entries",
            "billed_entries",
            "completions",
            "failed_requests",
        )
    ),
    # token sums: numeric, as sum(bigint) is (an entry may carry up to INT8_MAX tokens)
    *(
        Column(name, Numeric, nullable=False)
        for name in ("prompt_tokens", "cached_prompt_tokens", "completion_tokens")
    ),
    Column("work_units", Numeric, nullable=False),
    Column("busy_seconds", Numeric, nullable=False),
    Column("amount", Numeric, nullable=False),
    # goodput and waste (migration 0011)
    *(Column(name, BigInteger, nullable=False) for name in GOODPUT_COUNTS),
    *(Column(name, Numeric, nullable=False) for name in GOODPUT_AMOUNTS),
    UniqueConstraint(
        "day", "resource_id", "currency", "tenant_id", "model", postgresql_nulls_not_distinct=True
    ),
    Index("ix_ledger_daily_tenant_id_day", "tenant_id", "day"),
)

gpu_rates = Table(
    "gpu_rates",
    metadata,
    Column("rate_id", String(64), primary_key=True),
    Column("resource_id", Text, nullable=False),
    Column("price_per_hour", AMOUNT, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("effective_to", DateTime(timezone=True)),
    Column("source", Text, nullable=False),
    Column("provider", Text),
    Column("instance_type", Text),
    Column("gpu_model", Text),
    Column("gpu_count", Integer),
    Column("region", Text),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_gpu_rates_resource_from", "resource_id", "effective_from"),
)

prices = Table(
    "prices",
    metadata,
    Column("price_id", String(64), primary_key=True),
    Column("tenant_id", Text),
    Column("model", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("prompt_per_million", AMOUNT, nullable=False),
    Column("cached_prompt_per_million", AMOUNT, nullable=False),
    Column("completion_per_million", AMOUNT, nullable=False),
    Column("per_request", AMOUNT),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("effective_to", DateTime(timezone=True)),
    Column("source", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    CheckConstraint(
        "prompt_per_million >= 0 AND cached_prompt_per_million >= 0 "
        "AND completion_per_million >= 0 AND coalesce(per_request, 0) >= 0",
        name="non_negative",
    ),
    CheckConstraint("effective_to IS NULL OR effective_to > effective_from", name="interval"),
    Index("ix_prices_model_tenant_from", "model", "tenant_id", "effective_from"),
)

resources = Table(
    "resources",
    metadata,
    Column("resource_id", Text, primary_key=True),
    Column("provider", Text),
    Column("instance_type", Text),
    Column("gpu_model", Text),
    Column("gpu_count", Integer),
    Column("region", Text),
    Column("first_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("consumer_group", Text, primary_key=True),
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# end-of-input markers the ledger writer has read on its input, committed with what came
# before them: `run --until-idle` beside a running `up` waits for its run's markers here
end_markers = Table(
    "end_markers",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

billing_lines = Table(
    "billing_lines",
    metadata,
    Column("line_id", String(128), primary_key=True),
    Column("resource_id", Text),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("cost", AMOUNT, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("charge_category", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("provider", Text),
    Column("sku", Text),
    Column("pricing_category", Text),
    Column("description", Text),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_billing_lines_resource_period", "resource_id", "period_start"),
)

counted_event_sets = Table(
    "counted_event_sets",
    metadata,
    Column("resource_id", Text, primary_key=True),
    Column("bucket_start", DateTime(timezone=True), primary_key=True),
    Column("set_id", String(64), primary_key=True),  # a hash of the set: written once
    Column("event_ids", ARRAY(Text), nullable=False),
    Column("statuses", ARRAY(Text), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("cardinality(event_ids) = cardinality(statuses)", name="aligned"),
)
"""The events an allocation message counts, one row per message (the view ``counted_events``
unnests them to one row per event)."""

attribution_state = Table(
    "attribution_state",
    metadata,
    Column("resource_id", Text, primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("data", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('bucket', 'rate', 'bill')", name="kind"),
)


# How far each attribution worker has closed buckets (event time): the audit expects every
# rated bucket before the latest of these in the ledger.
attribution_progress = Table(
    "attribution_progress",
    metadata,
    Column("worker_id", Text, primary_key=True),
    Column("closed_through", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Which attribution worker owns each resource: claimed when the resource's state is loaded,
# checked when its decisions are stored (a revoked owner's late decisions are dropped).
resource_owners = Table(
    "resource_owners",
    metadata,
    Column("resource_id", Text, primary_key=True),
    Column("worker_id", Text, nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Allocations decided but not yet known to be in Kafka: written in the same transaction as the
# attribution state that says they were decided, deleted once Kafka acknowledged them. A crash
# in between republishes them (same entry ids: the ledger keeps one copy).
attribution_outbox = Table(
    "attribution_outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("resource_id", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index(None, "resource_id"),
)


# Budgets (DESIGN.md section 4): one tenant's or all tenants' (tenant_id NULL) spend per UTC
# calendar period. Deleting one sets deleted_at: its alerts keep their budget.
budgets = Table(
    "budgets",
    metadata,
    Column("budget_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("tenant_id", Text),
    Column("period", Text, nullable=False),
    Column("amount", AMOUNT, nullable=False),
    Column("currency", String(3), nullable=False),
    Column(
        "thresholds", ARRAY(Numeric), nullable=False, server_default=text("'{0.5,0.8,1.0}'")
    ),  # fractions of the amount
    Column("include_idle_share", Boolean, nullable=False, server_default=text("false")),
    Column("webhooks", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("webhook_secret", Text),  # the budget's own; else INFERLEDGER_WEBHOOK_SECRET
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True)),
    CheckConstraint("period IN ('day', 'week', 'month')", name="period"),
    CheckConstraint("amount > 0", name="amount"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    CheckConstraint(
        "array_position(thresholds, NULL) IS NULL AND 0 < ALL (thresholds)", name="thresholds"
    ),
    CheckConstraint("inferledger_http_urls(webhooks)", name="webhooks"),
)

# Alerts fired: the unique constraint on (budget, period, kind, subject) is what makes an alert
# fire once. subject: the normalized threshold ("0.8"), '' for a forecast, the model for an
# anomaly.
budget_alerts = Table(
    "budget_alerts",
    metadata,
    Column("alert_id", String(128), primary_key=True),
    Column("budget_id", String(64), ForeignKey("budgets.budget_id"), nullable=False),
    Column("tenant_id", Text),
    Column("kind", Text, nullable=False),
    Column("subject", Text, nullable=False, server_default=text("''")),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("threshold", AMOUNT),
    Column("spend", AMOUNT, nullable=False),
    Column("budget", AMOUNT, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("forecast_spend", AMOUNT),
    Column("baseline", AMOUNT),
    Column("observed", AMOUNT),
    Column("text", Text, nullable=False),
    Column("fired_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('threshold', 'forecast', 'anomaly')", name="kind"),
    UniqueConstraint("budget_id", "period_start", "kind", "subject"),
)

# One row per delivery attempt of an alert to one target (a webhook URL or
# 'kafka:budget-alerts').
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("alert_id", String(128), ForeignKey("budget_alerts.alert_id"), nullable=False),
    Column("target", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("status_code", Integer),
    Column("error", Text),
    Column("delivered", Boolean, nullable=False, server_default=text("false")),
    Index(None, "alert_id", "target"),
)

# Which login role is which tenant's (DESIGN.md section 4): row-level security shows a tenant's
# login only that tenant's rows. Written by `inferledger roles grant-tenant|revoke`, read through
# inferledger_current_tenant() (migration 0008); tenants have no privilege on it.
tenant_logins = Table(
    "tenant_logins",
    metadata,
    Column("role_name", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("tenant_id <> ''", name="tenant_id"),
)
