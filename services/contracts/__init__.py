"""Wire contracts: the pydantic models are the source of truth for every message on every topic."""

from services.contracts.models import (
    MESSAGE_MODELS,
    BillingLine,
    BudgetAlert,
    CostAllocation,
    EndOfInput,
    GpuRate,
    InferenceEvent,
    InferenceEventBatch,
    LedgerEntry,
)
from services.contracts.wire import (
    DecodeError,
    decode_allocation,
    decode_billing,
    decode_events,
    decode_rate,
    dumps,
)

__all__ = [
    "MESSAGE_MODELS",
    "BillingLine",
    "BudgetAlert",
    "CostAllocation",
    "DecodeError",
    "EndOfInput",
    "GpuRate",
    "InferenceEvent",
    "InferenceEventBatch",
    "LedgerEntry",
    "decode_allocation",
    "decode_billing",
    "decode_events",
    "decode_rate",
    "dumps",
]
