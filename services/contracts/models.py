"""Pydantic models for every message type (DESIGN.md section 2).

Money is a decimal string on the wire and ``Decimal`` in Python; a JSON float or integer for
money is rejected. Timestamps must carry an offset and are normalised to UTC.

The input limits of DESIGN.md section 2 are checked here, where a message is decoded, so that
nothing a processor cannot store or account ever reaches it: no control character in an id or a
name (``NO_CONTROL``), no NUL or lone surrogate anywhere in ``attributes`` or free text (Postgres
text and JSONB refuse them), at most ``MAX_TOKENS`` tokens per count and ``MAX_GPUS`` GPUs, a
request at most ``Limits.max_request_seconds`` long, timestamps inside the years 2..9998 (UTC),
and money finite, inside ``PRICE_LIMIT`` and with at most ``MONEY_MAX_PLACES`` decimal places.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

MAX_TOKENS = 10**9
"""Most tokens one count of one event may be (prompt, cached prompt, completion)."""
MAX_GPUS = 4_096
"""Most GPUs one event (or one rate's resource) may span."""
MAX_REQUEST_SECONDS = 86_400
"""Default longest request (``finished_at - started_at``); ``INFERLEDGER_MAX_REQUEST_SECONDS``."""
MAX_FUTURE_SECONDS = 300
"""Default most ``finished_at`` may be after the processor's wall clock when it reads the event
(``INFERLEDGER_MAX_FUTURE_SECONDS``); judged by the processor, see ``wire.check_clock``."""
MAX_ATTRIBUTE_DEPTH = 32
"""Most levels of objects and arrays in an event's ``attributes`` (the object itself is one)."""
MONEY_MAX_PLACES = 30
"""Most decimal places of an input amount (the ledger keeps 12; Postgres NUMERIC would refuse
an amount with thousands of places, or an exponent such as ``1e-999999``)."""
TIMESTAMP_MIN = datetime(2, 1, 1, tzinfo=UTC)
"""Earliest instant accepted (inclusive): converting to UTC and bucket arithmetic stay inside
Python's calendar."""
TIMESTAMP_MAX = datetime(9999, 1, 1, tzinfo=UTC)
"""First instant refused: the year 9999 and later (bucket ends, horizons would overflow)."""

NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"
"""What an id or a name must match: no control character (Unicode category Cc, NUL included).
Lone surrogates are refused by pydantic's ``str`` itself (and by the JSON parser)."""
NO_NUL = r"^[^\x00]*$"
"""What free text (a billing line's description) must match: no NUL (Postgres text refuses it);
tabs and newlines are fine."""
_PG_UNSAFE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Limits:
    """The input limits that are settings (``INFERLEDGER_MAX_REQUEST_SECONDS``,
    ``INFERLEDGER_MAX_FUTURE_SECONDS``); the decoders take one, the defaults without."""

    max_request_seconds: int = MAX_REQUEST_SECONDS
    max_future_seconds: int = MAX_FUTURE_SECONDS

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        """From ``services.runtime.config.Settings`` (or anything with the same attributes)."""
        return cls(
            max_request_seconds=int(settings.max_request_seconds),
            max_future_seconds=int(settings.max_future_seconds),
        )


DEFAULT_LIMITS = Limits()


def attributes_problem(value: Any, max_depth: int = MAX_ATTRIBUTE_DEPTH) -> str | None:
    """Why ``attributes`` cannot be accepted, or None: a NUL or a lone surrogate in any key or
    string value at any depth (Postgres JSONB refuses them), a non-finite number (not JSON), or
    more than ``max_depth`` levels of nesting. Iterative: no recursion, whatever the depth."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _PG_UNSAFE.search(item) is not None:
                return "a string contains NUL or a lone surrogate"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "a number is not finite"
        elif isinstance(item, dict | list | tuple):
            if depth > max_depth:
                return f"nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and _PG_UNSAFE.search(key) is not None:
                        return "a key contains NUL or a lone surrogate"
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
    return None


def _attributes(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        problem = attributes_problem(value)
        if problem is not None:
            raise ValueError(problem)
    return value


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


def _places(value: Decimal) -> Decimal:
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MONEY_MAX_PLACES:
        raise ValueError(f"money has more than {MONEY_MAX_PLACES} decimal places")
    return value


def _utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("timestamp has no UTC offset (naive timestamps are rejected)")
    # compared before any conversion: astimezone overflows at the calendar's ends
    if not TIMESTAMP_MIN <= value < TIMESTAMP_MAX:
        raise ValueError("timestamp is outside the years 0002 to 9998 (UTC)")
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
InputMoney = Annotated[Money, Field(gt=-PRICE_LIMIT, lt=PRICE_LIMIT), AfterValidator(_places)]

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_CONTROL)]
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_CONTROL)]
Text = Annotated[str, Field(pattern=NO_CONTROL)]
"""An optional id or name (``request_id``, ``provider``, ``sku``, ...): no control character."""
FreeText = Annotated[str, Field(pattern=NO_NUL)]
Count = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
Gpus = Annotated[int, Field(ge=1, le=MAX_GPUS)]
Attributes = Annotated[dict[str, Any] | None, AfterValidator(_attributes)]


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
    request_id: Text | None = None
    started_at: Timestamp
    first_token_at: Timestamp | None = None
    finished_at: Annotated[
        Timestamp,
        Field(
            description="at or after started_at, and at most max_request_seconds "
            f"(INFERLEDGER_MAX_REQUEST_SECONDS, default {MAX_REQUEST_SECONDS}) after it"
        ),
    ]
    prompt_tokens: Count
    cached_prompt_tokens: Count = 0
    completion_tokens: Count
    status: Literal["ok", "error", "cancelled"]
    gpu_count: Gpus = 1
    attributes: Attributes = Field(
        default=None,
        description="free-form labels; no NUL or lone surrogate in any key or string, no "
        f"non-finite number, at most {MAX_ATTRIBUTE_DEPTH} levels deep",
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> InferenceEvent:
        if self.cached_prompt_tokens > self.prompt_tokens:
            raise ValueError(
                f"cached_prompt_tokens ({self.cached_prompt_tokens}) exceeds "
                f"prompt_tokens ({self.prompt_tokens})"
            )
        if self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        context = info.context
        limits = context.get("limits") if isinstance(context, dict) else None
        longest = (limits or DEFAULT_LIMITS).max_request_seconds
        if self.finished_at - self.started_at > timedelta(seconds=longest):
            raise ValueError(
                f"the request lasts {(self.finished_at - self.started_at).total_seconds():.0f} s,"
                f" more than max_request_seconds ({longest})"
            )
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
    provider: Text | None = None
    instance_type: Text | None = None
    gpu_model: Text | None = None
    gpu_count: Gpus | None = None
    region: Text | None = None

    @model_validator(mode="after")
    def _interval(self) -> GpuRate:
        if self.price_per_hour < 0:
            raise ValueError("price_per_hour is negative")
        if self.effective_to is not None and self.effective_to <= self.effective_from:
            raise ValueError("effective_to is not after effective_from")
        return self


class Price(_Contract):
    """What a tenant pays for a model: per million tokens (uncached prompt, cached prompt,
    completion) and optionally per completed request, in ``currency``, from ``effective_from``
    until ``effective_to`` (open: until superseded). ``tenant_id`` null: the default list,
    which a tenant's own price for the same model overrides (docs/sql.md#v_tenant_margin)."""

    type: Literal["inferledger.price.v1"] = "inferledger.price.v1"
    tenant_id: Id | None = None
    model: Name
    currency: Currency
    prompt_per_million: InputMoney
    cached_prompt_per_million: InputMoney
    completion_per_million: InputMoney
    per_request: InputMoney | None = None
    effective_from: Timestamp
    effective_to: Timestamp | None = None
    source: Name = "list"

    @model_validator(mode="after")
    def _interval(self) -> Price:
        for name in ("prompt_per_million", "cached_prompt_per_million", "completion_per_million",
                     "per_request"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} is negative")
        if self.effective_to is not None and self.effective_to <= self.effective_from:
            raise ValueError("effective_to is not after effective_from")
        return self


class BillingLine(_Contract):
    """What the provider actually billed, hours or days later."""

    type: Literal["inferledger.billing_line.v1"] = "inferledger.billing_line.v1"
    line_id: Id
    resource_id: Text | None = None
    period_start: Timestamp
    period_end: Timestamp
    cost: InputMoney
    currency: Currency
    charge_category: Name
    source: Name = "focus"
    provider: Text | None = None
    sku: Text | None = None
    pricing_category: Text | None = None
    description: FreeText | None = None

    @model_validator(mode="after")
    def _interval(self) -> BillingLine:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


EntryKind = Literal["usage", "idle", "late_adjustment", "reconciliation"]
CostBasis = Literal["provisional", "billed", "unpriced"]


class LedgerEntry(_Contract):
    """One row the attribution processor wants in ``ledger_entries``."""

    entry_id: Annotated[str, Field(min_length=16, max_length=64, pattern=NO_CONTROL)]
    entry_kind: EntryKind
    cost_basis: CostBasis
    tenant_id: Text | None = None
    model: Text | None = None
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
    billing_line_ids: list[Text] = Field(default_factory=list)
    # goodput and waste (services/contracts/ledger.py); absent in older messages: 0
    completions_within_slo: int = Field(default=0, ge=0, le=INT4_MAX)
    cancelled_requests: int = Field(default=0, ge=0, le=INT4_MAX)
    slo_miss_amount: Annotated[Money, Field(gt=-AMOUNT_LIMIT, lt=AMOUNT_LIMIT)] = Decimal(0)
    failed_amount: Annotated[Money, Field(gt=-AMOUNT_LIMIT, lt=AMOUNT_LIMIT)] = Decimal(0)
    cancelled_amount: Annotated[Money, Field(gt=-AMOUNT_LIMIT, lt=AMOUNT_LIMIT)] = Decimal(0)


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
    """A budget threshold, forecast or anomaly alert (DESIGN.md section 2, ``budget-alerts``).

    The same JSON is what a webhook receives (signed: :mod:`services.contracts.webhook`);
    ``text`` is one human sentence, so a Slack incoming webhook shows it as it is.
    ``threshold`` is a fraction of the budget (``"0.8"``) for ``threshold`` alerts;
    ``forecast_spend`` is set for ``forecast``; ``model``, ``baseline`` and ``observed`` (cost
    per completion: the trailing baseline and what was seen) for ``anomaly``."""

    type: Literal["inferledger.budget_alert.v1"] = "inferledger.budget_alert.v1"
    alert_id: Id
    budget_id: Id
    tenant_id: Id | None = Field(description="null for a budget over all tenants")
    kind: Literal["threshold", "forecast", "anomaly"]
    threshold: Money | None = None
    period_start: Timestamp
    period_end: Timestamp
    spend: Money
    budget: Money
    currency: Currency
    forecast_spend: Money | None = None
    model: Id | None = Field(default=None, description="the model of an anomaly")
    baseline: Money | None = None
    observed: Money | None = None
    fired_at: Timestamp
    text: Annotated[str, Field(min_length=1, max_length=2000, pattern=NO_NUL)]


class EndOfInput(_Contract):
    """Control marker: everything before it on this partition belongs to run ``run_id``.

    ``inferledger run --until-idle`` writes one to every partition of its input topics; a
    processor that has seen the marker of its own run on each of its partitions has drained
    its bounded input. Markers of other runs are ignored by bounded runs.

    A streaming processor (``inferledger up``, ``run`` without ``--until-idle``) reads a marker
    with ``at`` as a heartbeat: once a run's markers are on all its input partitions, its
    watermark moves to at least ``at`` (less the allowed lateness, as for an event finishing
    at ``at``), the buckets before it close, and the marker is passed on to the
    cost-allocations topic, where the ledger writer records it (``end_markers``). That is how
    ``run --until-idle`` beside a running ``up`` waits for everything fed before it.
    """

    type: Literal["inferledger.control.end_of_input.v1"] = "inferledger.control.end_of_input.v1"
    run_id: Id
    at: Timestamp | None = None


class DeadLetter(BaseModel):
    """A rejected message on ``<topic>.dlq``: why, who rejected it, from where, and the
    original payload as text (truncated to ``INFERLEDGER_DLQ_PAYLOAD_LIMIT`` characters).

    Strings are kept exactly as they are (no stripping: the payload is the evidence and what a
    replay sends back). ``partition`` and ``offset`` are null for a message rejected before it
    reached a topic (the gateway, file ingest, the emitter). ``credential`` and
    ``credential_id`` name who sent it where a component authenticates its callers (the
    gateway: the token's configured name and a non-secret id of it, never the token itself);
    ``dlq replay`` authorizes the payload again against them. Written by
    ``services.runtime.kafka.dead_letter`` with :func:`services.contracts.wire.encode_dead_letter`,
    read back with :func:`services.contracts.wire.decode_dead_letter`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["inferledger.dead_letter.v1"] = "inferledger.dead_letter.v1"
    reason: str = Field(description="machine-readable reason, e.g. invalid_event, forbidden")
    detail: str = Field(description="what exactly was wrong (at most 2000 characters)")
    source: str = Field(description="the component that rejected it: gateway, ingest, ...")
    topic: str = Field(description="the topic the payload was meant for (a replay sends it there)")
    partition: int | None = None
    offset: int | None = None
    payload: str = Field(description="the original message as text, maybe truncated")
    payload_truncated: bool
    payload_size: int = Field(ge=0, description="characters of the whole original payload")
    rejected_at: Timestamp
    credential: str | None = None
    credential_id: str | None = None


MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    "inference_event.v1": InferenceEvent,
    "inference_event_batch.v1": InferenceEventBatch,
    "gpu_rate.v1": GpuRate,
    "billing_line.v1": BillingLine,
    "price.v1": Price,
    "ledger_entry.v1": LedgerEntry,
    "cost_allocation.v1": CostAllocation,
    "budget_alert.v1": BudgetAlert,
    "end_of_input.v1": EndOfInput,
    "dead_letter.v1": DeadLetter,
}
