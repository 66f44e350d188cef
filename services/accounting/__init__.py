"""The pure accounting core: buckets, busy time, shares, rounding (no Kafka, SQL or HTTP here)."""

from services.accounting.arithmetic import (
    QUANTUM,
    allocate_bucket,
    bucket_ceil,
    bucket_floor,
    bucket_total,
    entry_id,
    largest_remainder,
    provisional_cost,
    request_buckets,
    request_work,
)
from services.accounting.book import Added, Book, ClosedBucket, Loader
from services.accounting.model import (
    AccountingSettings,
    Bill,
    Entry,
    Rate,
    Request,
    TokenWeights,
    from_us,
    to_us,
)

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
