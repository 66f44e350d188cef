"""The pure accounting core: buckets, busy time, shares, rounding, budget rules (no Kafka, SQL
or HTTP here)."""

from services.accounting.book import Added, Book, ClosedBucket, Loader
from services.accounting.buckets import bucket_ceil, bucket_floor, request_buckets, request_work
from services.accounting.budgets import (
    DEFAULT_RULES,
    AlertKind,
    AlertRules,
    AnomalyFinding,
    Budget,
    HourPoint,
    Period,
    alert_id,
    alert_text,
    anomaly_due,
    anomaly_subject,
    forecast_due,
    forecast_spend,
    period_bounds,
    threshold_str,
    thresholds_due,
    validate_webhook,
)
from services.accounting.entries import allocate_bucket, bucket_total, entry_id
from services.accounting.model import (
    QUANTUM,
    AccountingSettings,
    Bill,
    Entry,
    Rate,
    Request,
    TokenWeights,
    from_us,
    to_us,
)
from services.accounting.pricing import provisional_cost
from services.accounting.shares import largest_remainder
from services.accounting.slo import Slo, request_class

__all__ = [
    "DEFAULT_RULES",
    "QUANTUM",
    "AccountingSettings",
    "Added",
    "AlertKind",
    "AlertRules",
    "AnomalyFinding",
    "Bill",
    "Book",
    "Budget",
    "ClosedBucket",
    "Entry",
    "HourPoint",
    "Loader",
    "Period",
    "Rate",
    "Request",
    "Slo",
    "TokenWeights",
    "alert_id",
    "alert_text",
    "allocate_bucket",
    "anomaly_due",
    "anomaly_subject",
    "bucket_ceil",
    "bucket_floor",
    "bucket_total",
    "entry_id",
    "forecast_due",
    "forecast_spend",
    "from_us",
    "largest_remainder",
    "period_bounds",
    "provisional_cost",
    "request_buckets",
    "request_class",
    "request_work",
    "threshold_str",
    "thresholds_due",
    "to_us",
    "validate_webhook",
]
