"""Plain data for the accounting core: no pydantic, no I/O, integer microseconds for time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from typing import Any, NamedTuple

US_PER_SECOND = 1_000_000
QUANTUM = Decimal("1e-12")
"""Amounts are quantized to 1e-12 of their currency."""
CONTEXT = Context(prec=60)
"""Decimal context of the core: 60 digits, far beyond any amount or weighted token count."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    if ts.tzinfo is None:
        raise ValueError("naive datetime")
    return (ts - _EPOCH) // _ONE_US  # exact: timedelta arithmetic is in integer microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class TokenWeights:
    """Work per token: uncached prompt, cached prompt and completion tokens."""

    prompt: Decimal = Decimal("1.0")
    cached: Decimal = Decimal("0.1")
    completion: Decimal = Decimal("4.0")

    def __post_init__(self) -> None:
        for name in ("prompt", "cached", "completion"):
            w = getattr(self, name)
            if not w.is_finite() or w < 0 or w.scaleb(9) != w.scaleb(9).to_integral_value():
                raise ValueError(f"token weight {name}={w} must be >= 0 with at most 9 decimals")


@dataclass(frozen=True)
class AccountingSettings:
    bucket_seconds: int = 60
    allowed_lateness_seconds: int = 120
    default_weights: TokenWeights = field(default_factory=TokenWeights)
    model_weights: dict[str, TokenWeights] = field(default_factory=dict)
    default_currency: str = "USD"
    late_horizon_seconds: int = 7 * 86_400
    billing_horizon_seconds: int = 62 * 86_400
    resident_seconds: int = 0
    slos: dict[str, Any] = field(default_factory=dict)
    """Latency objectives per model (``services.accounting.slo.Slo``); the key ``*`` is the
    default of models without their own. No objective: every ok request is within it."""
    """How far behind the watermark a closed bucket stays in memory when the Book has a loader
    (older ones are evicted and loaded back when a late event or a bill touches them)."""

    def __post_init__(self) -> None:
        if self.bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        if self.allowed_lateness_seconds < 0:
            raise ValueError("allowed_lateness_seconds must not be negative")
        if self.resident_seconds < 0:
            raise ValueError("resident_seconds must not be negative")

    @property
    def bucket_us(self) -> int:
        return self.bucket_seconds * US_PER_SECOND

    @property
    def lateness_us(self) -> int:
        return self.allowed_lateness_seconds * US_PER_SECOND

    @property
    def resident_us(self) -> int:
        return self.resident_seconds * US_PER_SECOND

    def weights_for(self, model: str) -> TokenWeights:
        return self.model_weights.get(model, self.default_weights)


class Request(NamedTuple):
    """One inference request, as the core sees it (a named tuple: cheap to build per event)."""

    event_id: str
    tenant_id: str
    model: str
    resource_id: str
    start_us: int
    end_us: int
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int
    status: str
    gpu_count: int = 1
    first_token_us: int | None = None


@dataclass(frozen=True)
class Rate:
    """A provisional price segment of a resource: ``[start_us, end_us)``, open-ended if None."""

    resource_id: str
    start_us: int
    end_us: int | None
    price_per_hour: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry decided by the core (the contract's ``LedgerEntry`` without I/O types)."""

    entry_id: str
    entry_kind: str
    cost_basis: str
    tenant_id: str | None
    model: str | None
    resource_id: str
    bucket_start_us: int
    bucket_seconds: int
    amount: Decimal
    currency: str
    completions: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    work_units: Decimal = Decimal(0)
    busy_seconds: Decimal = Decimal(0)
    billing_line_ids: tuple[str, ...] = ()
    completions_within_slo: int = 0
    cancelled_requests: int = 0
    slo_miss_amount: Decimal = Decimal(0)
    failed_amount: Decimal = Decimal(0)
    cancelled_amount: Decimal = Decimal(0)


@dataclass(frozen=True)
class Bill:
    """A billed amount for ``[start_us, end_us)`` of a resource (a usage billing line)."""

    line_id: str
    resource_id: str
    start_us: int
    end_us: int
    cost: Decimal
    currency: str
