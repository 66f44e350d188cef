"""Pydantic models for every message type (DESIGN.md section 2).

Money is a decimal string on the wire and ``Decimal`` in Python; a JSON float or integer for
money is rejected. Timestamps must carry an offset and are normalised to UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)


def _money(value: Any) -> Decimal:
    if isinstance(value, (bool, float | int)):
        raise ValueError('money must be a decimal string such as "0.000123", not a JSON number')
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal string: {value!r}") from None
    else:
        raise ValueError("money must be a decimal string")
    if not result.is_finite():
        raise ValueError("money must be finite")
    return result


def _utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("timestamp has no UTC offset (naive timestamps are rejected)")
    return value if not offset else value.astimezone(UTC)  # already UTC: keep it as parsed


Money = Annotated[
    Decimal,
    BeforeValidator(_money),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^-?\d+(\.\d+)?$",
            "description": "decimal amount as a string, never a JSON number",
        }
    ),
]
"""A decimal amount, written as a string."""

Timestamp = Annotated[
    datetime,
    AfterValidator(_utc),
    Field(json_schema_extra={"format": "date-time"}),
]
"""An RFC 3339 timestamp with an offset, normalised to UTC."""

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]

# ledger column limits: NUMERIC(38,12), NUMERIC(38,6), NUMERIC(20,6), INTEGER, BIGINT
AMOUNT_LIMIT = Decimal(10) ** 26
WORK_LIMIT = Decimal(10) ** 32
BUSY_LIMIT = Decimal(10) ** 14
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
PRICE_LIMIT = Decimal(10) ** 20
"""Most a rate's hourly price or a billing line's cost may be (either sign): every amount
derived from them, a bucket's share summed over its lines, a week-long bucket at that rate,
and the difference of two such amounts, stays far inside ``AMOUNT_LIMIT``, so an absurd input
is refused where it enters instead of its bucket's allocation being refused by the ledger."""
InputMoney = Annotated[Money, Field(gt=-PRICE_LIMIT, lt=PRICE_LIMIT)]

Id = Annotated[str, Field(min_length=1, max_length=128)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class InferenceEvent(_Contract):
    """One completed, failed or cancelled request on one billed resource."""

    type: Literal["inferledger.inference_event.v1"] = "inferledger.inference_event.v1"
    event_id: Id
    tenant_id: Id
    resource_id: Name
    model: Name
    engine: Name
    request_id: str | None = None
    started_at: Timestamp
    first_token_at: Timestamp | None = None
    finished_at: Timestamp
    prompt_tokens: int = Field(ge=0)
    cached_prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(ge=0)
    status: Literal["ok", "error", "cancelled"]
    gpu_count: int = Field(default=1, ge=1)
    attributes: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> InferenceEvent:
        if self.cached_prompt_tokens > self.prompt_tokens:
            raise ValueError(
                f"cached_prompt_tokens ({self.cached_prompt_tokens}) exceeds "
                f"prompt_tokens ({self.prompt_tokens})"
            )
        if self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        if self.first_token_at is not None and not (
            self.started_at <= self.first_token_at <= self.finished_at
        ):
            raise ValueError("first_token_at is outside [started_at, finished_at]")
        return self


class InferenceEventBatch(_Contract):
    """Many events of one resource in one message (what producers should send)."""

    type: Literal["inferledger.inference_event_batch.v1"] = "inferledger.inference_event_batch.v1"
    resource_id: Name
    events: list[InferenceEvent] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_resource(self) -> InferenceEventBatch:
        for event in self.events:
            if event.resource_id != self.resource_id:
                raise ValueError(
                    f"event {event.event_id} is for resource {event.resource_id!r}, "
                    f"the batch for {self.resource_id!r}"
                )
        return self


class GpuRate(_Contract):
    """A provisional price for a resource, known in real time."""

    type: Literal["inferledger.gpu_rate.v1"] = "inferledger.gpu_rate.v1"
    resource_id: Name
    price_per_hour: InputMoney
    currency: Currency
    effective_from: Timestamp
    effective_to: Timestamp | None = None
    source: Name = "list"
    provider: str | None = None
    instance_type: str | None = None
    gpu_model: str | None = None
    gpu_count: int | None = Field(default=None, ge=1)
    region: str | None = None

    @model_validator(mode="after")
    def _interval(self) -> GpuRate:
        if self.price_per_hour < 0:
            raise ValueError("price_per_hour is negative")
        if self.effective_to is not None and self.effective_to <= self.effective_from:
            raise ValueError("effective_to is not after effective_from")
        return self


class BillingLine(_Contract):
    """What the provider actually billed, hours or days later."""

    type: Literal["inferledger.billing_line.v1"] = "inferledger.billing_line.v1"
    line_id: Id
    resource_id: str | None = None
    period_start: Timestamp
    period_end: Timestamp
    cost: InputMoney
    currency: Currency
    charge_category: Name
    source: Name = "focus"
    provider: str | None = None
    sku: str | None = None
    pricing_category: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _interval(self) -> BillingLine:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


EntryKind = Literal["usage", "idle", "late_adjustment", "reconciliation"]
CostBasis = Literal["provisional", "billed", "unpriced"]


class LedgerEntry(_Contract):
    """One row the attribution processor wants in ``ledger_entries``."""

    entry_id: Annotated[str, Field(min_length=16, max_length=64)]
    entry_kind: EntryKind
    cost_basis: CostBasis
    tenant_id: str | None = None
    model: str | None = None
    resource_id: Name
    bucket_start: Timestamp
    bucket_seconds: int = Field(gt=0)
    # the limits are the ledger columns' (a value beyond them is refused here, with a reason,
    # instead of failing the writer's whole batch in Postgres)
    completions: int = Field(default=0, ge=0, le=INT4_MAX)
    failed_requests: int = Field(default=0, ge=0, le=INT4_MAX)
    prompt_tokens: int = Field(default=0, ge=0, le=INT8_MAX)
    cached_prompt_tokens: int = Field(default=0, ge=0, le=INT8_MAX)
    completion_tokens: int = Field(default=0, ge=0, le=INT8_MAX)
    work_units: Annotated[Money, Field(gt=-WORK_LIMIT, lt=WORK_LIMIT)] = Decimal(0)
    busy_seconds: Annotated[Money, Field(gt=-BUSY_LIMIT, lt=BUSY_LIMIT)] = Decimal(0)
    amount: Annotated[Money, Field(gt=-AMOUNT_LIMIT, lt=AMOUNT_LIMIT)]
    currency: Currency
    billing_line_ids: list[str] = Field(default_factory=list)


class CostAllocation(_Contract):
    """The entries decided for one resource and one bucket."""

    type: Literal["inferledger.cost_allocation.v1"] = "inferledger.cost_allocation.v1"
    resource_id: Name
    bucket_start: Timestamp
    bucket_seconds: int = Field(gt=0)
    entries: list[LedgerEntry]
    counted_events: list[tuple[Id, Literal["ok", "error", "cancelled"]]] = Field(
        default_factory=list,
        description="(event_id, status) of the requests these entries count for the first time",
    )


class BudgetAlert(_Contract):
    """A budget threshold, forecast or anomaly alert."""

    type: Literal["inferledger.budget_alert.v1"] = "inferledger.budget_alert.v1"
    alert_id: Id
    budget_id: Id
    tenant_id: Id
    kind: Literal["threshold", "forecast", "anomaly"]
    threshold: Money | None = None
    period_start: Timestamp
    period_end: Timestamp
    spend: Money
    budget: Money
    currency: Currency
    forecast_spend: Money | None = None
    fired_at: Timestamp


class EndOfInput(_Contract):
    """Control marker: everything before it on this partition belongs to run ``run_id``.

    ``inferledger run --until-idle`` writes one to every partition of its input topics; a
    processor that has seen the marker of its own run on each of its partitions has drained
    its bounded input. Markers of other runs are ignored.
    """

    type: Literal["inferledger.control.end_of_input.v1"] = "inferledger.control.end_of_input.v1"
    run_id: Id


MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    "inference_event.v1": InferenceEvent,
    "inference_event_batch.v1": InferenceEventBatch,
    "gpu_rate.v1": GpuRate,
    "billing_line.v1": BillingLine,
    "ledger_entry.v1": LedgerEntry,
    "cost_allocation.v1": CostAllocation,
    "budget_alert.v1": BudgetAlert,
    "end_of_input.v1": EndOfInput,
}
