"""The pure accounting core: buckets, busy time, shares, rounding (no Kafka, SQL or HTTP here)."""

from services.accounting.book import Added, Book, ClosedBucket, Loader
from services.accounting.buckets import bucket_ceil, bucket_floor, request_buckets, request_work
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

__all__ = [
    "QUANTUM",
    "AccountingSettings",
    "Added",
    "Bill",
    "Book",
    "ClosedBucket",
    "Entry",
    "Loader",
    "Rate",
    "Request",
    "TokenWeights",
    "allocate_bucket",
    "bucket_ceil",
    "bucket_floor",
    "bucket_total",
    "entry_id",
    "from_us",
    "largest_remainder",
    "provisional_cost",
    "request_buckets",
    "request_work",
    "to_us",
]
