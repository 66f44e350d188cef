"""A simulated GPU fleet and the deterministic replay of the Azure LLM inference trace.

Service-time model (stated, simple, deterministic): a request is admitted at its trace arrival
time (continuous batching, no queueing); its time to first token is
``0.02 s + uncached_prompt_tokens / prefill_tps``, then it decodes at ``decode_tps`` tokens per
second: ``finished_at = first_token_at + completion_tokens / decode_tps``. Tenant, model, node,
prefix-cache hits and status come from a seeded SHA-256 of the row number, so every run of the
same trace and seed gives the same events and the same ledger.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.contracts import GpuRate, InferenceEvent

TRACE = Path(__file__).parent / "data" / "azure-llm-inference-trace-2023-code.csv"


class FleetError(ValueError):
    """A fleet description that cannot be used, and why."""


@dataclass(frozen=True)
class Node:
    resource_id: str
    instance_type: str
    gpu_model: str
    gpu_count: int
    price_per_hour: Decimal
    models: tuple[str, ...]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    share: int  # relative share of requests
    gpu_count: int  # GPUs one replica spans (tensor parallel)
    prefill_tps: int
    decode_tps: int


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    share: int
    cache_hit_rate: float  # fraction of requests whose prompt prefix is cached
    cached_fraction: float  # fraction of the prompt that is cached on a hit


@dataclass(frozen=True)
class Fleet:
    seed: str
    currency: str
    nodes: tuple[Node, ...]
    models: tuple[ModelSpec, ...]
    tenants: tuple[Tenant, ...]
    error_rate: float = 0.01
    cancel_rate: float = 0.005
    provider: str = "AWS"
    region: str = "us-east-1"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fleet:
        """A fleet from its description; a clear :class:`FleetError` when it does not hold."""
        try:
            fleet = cls._from_dict(d)
        except FleetError:
            raise
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise FleetError(f"invalid fleet description: {what}") from None
        fleet.check()
        return fleet

    def check(self) -> None:
        if not self.nodes or not self.models or not self.tenants:
            raise FleetError("a fleet needs at least one node, one model and one tenant")
        for m in self.models:
            if m.share <= 0 or m.gpu_count <= 0 or m.prefill_tps <= 0 or m.decode_tps <= 0:
                raise FleetError(f"model {m.name}: share, gpu_count and throughputs must be > 0")
            if not any(m.name in n.models for n in self.nodes):
                raise FleetError(f"model {m.name} is served by no node (add it to a node's models)")
        for t in self.tenants:
            if t.share <= 0 or not 0 <= t.cache_hit_rate <= 1 or not 0 <= t.cached_fraction <= 1:
                raise FleetError(f"tenant {t.tenant_id}: share > 0 and rates within [0, 1]")
        for n in self.nodes:
            if n.price_per_hour < 0 or not n.price_per_hour.is_finite():
                raise FleetError(f"node {n.resource_id}: price_per_hour must be >= 0")
            unknown = set(n.models) - {m.name for m in self.models}
            if unknown:
                raise FleetError(f"node {n.resource_id} serves unknown models {sorted(unknown)}")
        if len({n.resource_id for n in self.nodes}) != len(self.nodes):
            raise FleetError("node resource_ids must be unique")

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> Fleet:
        return cls(
            seed=str(d["seed"]),
            currency=d.get("currency", "USD"),
            nodes=tuple(
                Node(
                    n["resource_id"],
                    n["instance_type"],
                    n["gpu_model"],
                    int(n["gpu_count"]),
                    Decimal(str(n["price_per_hour"])),
                    tuple(n.get("models", ())),
                )
                for n in d["nodes"]
            ),
            models=tuple(
                ModelSpec(
                    m["name"],
                    int(m["share"]),
                    int(m["gpu_count"]),
                    int(m["prefill_tps"]),
                    int(m["decode_tps"]),
                )
                for m in d["models"]
            ),
            tenants=tuple(
                Tenant(
                    t["tenant_id"],
                    int(t["share"]),
                    float(t["cache_hit_rate"]),
                    float(t["cached_fraction"]),
                )
                for t in d["tenants"]
            ),
            error_rate=float(d.get("error_rate", 0.01)),
            cancel_rate=float(d.get("cancel_rate", 0.005)),
            provider=d.get("provider", "AWS"),
            region=d.get("region", "us-east-1"),
        )

    @classmethod
    def load(cls, path: str | Path) -> Fleet:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FleetError(f"cannot read fleet file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise FleetError(f"fleet file {path}: expected a JSON object")
        return cls.from_dict(data)


DEFAULT_FLEET: dict[str, Any] = {
    "seed": "inferledger-demo-1",
    "currency": "USD",
    "nodes": [
        {
            "resource_id": "i-0h100a",
            "instance_type": "p5.48xlarge",
            "gpu_model": "H100",
            "gpu_count": 8,
            "price_per_hour": "98.32",
            "models": ["llama-3.1-70b", "qwen2.5-coder-32b"],
        },
        {
            "resource_id": "i-0h100b",
            "instance_type": "p5.48xlarge",
            "gpu_model": "H100",
            "gpu_count": 8,
            "price_per_hour": "98.32",
            "models": ["llama-3.1-70b", "qwen2.5-coder-32b"],
        },
        {
            "resource_id": "i-0a100a",
            "instance_type": "p4d.24xlarge",
            "gpu_model": "A100",
            "gpu_count": 8,
            "price_per_hour": "32.77",
            "models": ["qwen2.5-coder-32b"],
        },
        {
            "resource_id": "i-0l4a",
            "instance_type": "g6.12xlarge",
            "gpu_model": "L4",
            "gpu_count": 4,
            "price_per_hour": "4.60",
            "models": ["llama-3.1-8b"],
        },
        {
            "resource_id": "i-0l4b",
            "instance_type": "g6.12xlarge",
            "gpu_model": "L4",
            "gpu_count": 4,
            "price_per_hour": "4.60",
            "models": ["llama-3.1-8b"],
        },
        {
            "resource_id": "i-0h100spare",
            "instance_type": "p5.48xlarge",
            "gpu_model": "H100",
            "gpu_count": 8,
            "price_per_hour": "98.32",
            "models": [],
        },
    ],
    "models": [
        {
            "name": "qwen2.5-coder-32b",
            "share": 50,
            "gpu_count": 2,
            "prefill_tps": 9000,
            "decode_tps": 45,
        },
        {
            "name": "llama-3.1-70b",
            "share": 20,
            "gpu_count": 4,
            "prefill_tps": 7000,
            "decode_tps": 30,
        },
        {
            "name": "llama-3.1-8b",
            "share": 30,
            "gpu_count": 1,
            "prefill_tps": 12000,
            "decode_tps": 90,
        },
    ],
    "tenants": [
        {"tenant_id": "acme", "share": 40, "cache_hit_rate": 0.6, "cached_fraction": 0.7},
        {"tenant_id": "globex", "share": 25, "cache_hit_rate": 0.3, "cached_fraction": 0.5},
        {"tenant_id": "initech", "share": 15, "cache_hit_rate": 0.1, "cached_fraction": 0.5},
        {"tenant_id": "umbrella", "share": 12, "cache_hit_rate": 0.0, "cached_fraction": 0.0},
        {"tenant_id": "hooli", "share": 8, "cache_hit_rate": 0.8, "cached_fraction": 0.9},
    ],
}


def _u(seed: str, row: int, what: str) -> float:
    """A uniform number in [0, 1) from the seed, the row number and a purpose."""
    digest = hashlib.sha256(f"{seed}|{row}|{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(items: list[Any], weights: list[int], u: float) -> Any:
    total = sum(weights)
    acc = 0.0
    for item, w in zip(items, weights, strict=True):
        acc += w / total
        if u < acc:
            return item
    return items[-1]


def parse_trace_time(text: str) -> datetime:
    """Trace timestamps are UTC without an offset and with 7 fractional digits."""
    base, _, frac = text.strip().partition(".")
    ts = datetime.strptime(base, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return ts + timedelta(microseconds=int((frac + "000000")[:6]))


class TraceError(ValueError):
    """A trace file that cannot be read, with the line it failed on."""


def read_trace(path: Path = TRACE, limit: int | None = None) -> Iterator[tuple[datetime, int, int]]:
    """Rows of an Azure LLM inference trace CSV: (arrival, prompt tokens, completion tokens)."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or ())
        if missing:
            raise TraceError(f"{path}: not an Azure LLM trace, missing columns {sorted(missing)}")
        for n, row in enumerate(reader):
            if limit is not None and n >= limit:
                return
            try:
                prompt, completion = int(row["ContextTokens"]), int(row["GeneratedTokens"])
                if prompt < 0 or completion < 0:
                    raise ValueError("negative token count")
                yield parse_trace_time(row["TIMESTAMP"]), prompt, completion
            except (ValueError, TypeError) as exc:
                raise TraceError(f"{path}, line {n + 2}: {exc}") from None


def simulate(
    fleet: Fleet, trace: Path = TRACE, limit: int | None = None, id_prefix: str = "azure-code-2023"
) -> Iterator[InferenceEvent]:
    """The trace's requests on the fleet, in trace (arrival) order; see the module docstring.
    Event ids are ``<id_prefix>-<row>``."""
    models = {m.name: m for m in fleet.models}
    model_names = [m.name for m in fleet.models]
    tenants = list(fleet.tenants)
    tenant_shares = [t.share for t in fleet.tenants]
    model_shares = [m.share for m in fleet.models]
    serving = {m: [n for n in fleet.nodes if m in n.models] for m in model_names}
    seed = fleet.seed
    for row, (arrival, prompt, completion) in enumerate(read_trace(trace, limit)):
        tenant = _pick(tenants, tenant_shares, _u(seed, row, "t"))
        model = models[_pick(model_names, model_shares, _u(seed, row, "m"))]
        nodes = serving[model.name]
        node = nodes[int(_u(seed, row, "n") * len(nodes))]
        cached = 0
        if _u(seed, row, "c") < tenant.cache_hit_rate:
            cached = int(prompt * tenant.cached_fraction)
        status = "ok"
        s = _u(seed, row, "s")
        if s < fleet.error_rate:
            status, completion = "error", 0
        elif s < fleet.error_rate + fleet.cancel_rate:
            status, completion = "cancelled", completion // 2
        ttft = 0.02 + (prompt - cached) / model.prefill_tps
        first = arrival + timedelta(seconds=ttft)
        finished = first + timedelta(seconds=completion / model.decode_tps)
        yield InferenceEvent(
            event_id=f"{id_prefix}-{row:06d}",
            tenant_id=tenant.tenant_id,
            resource_id=node.resource_id,
            model=model.name,
            engine="vllm",
            request_id=f"req-{row}",
            started_at=arrival,
            first_token_at=first,
            finished_at=finished,
            prompt_tokens=prompt,
            cached_prompt_tokens=cached,
            completion_tokens=completion,
            status=status,
            gpu_count=model.gpu_count,
        )


def replay(fleet: Fleet, trace: Path = TRACE, limit: int | None = None) -> list[InferenceEvent]:
    return list(simulate(fleet, trace, limit))


def in_finish_order(events: Iterable[InferenceEvent]) -> Iterator[InferenceEvent]:
    """Events in the order a fleet reports them (by ``finished_at``), from events in arrival
    order, holding only the requests still running: a request that arrives later cannot finish
    before the current arrival."""
    running: list[tuple[datetime, int, InferenceEvent]] = []
    for n, event in enumerate(events):
        while running and running[0][0] <= event.started_at:
            yield heapq.heappop(running)[2]
        heapq.heappush(running, (event.finished_at, n, event))
    while running:
        yield heapq.heappop(running)[2]


def rates(fleet: Fleet, start: datetime, end: datetime | None) -> list[GpuRate]:
    """One list-price rate per node for the rental window ``[start, end)`` (open-ended when
    ``end`` is None)."""
    return [
        GpuRate(
            resource_id=n.resource_id,
            price_per_hour=n.price_per_hour,
            currency=fleet.currency,
            effective_from=start,
            effective_to=end,
            source="list",
            provider=fleet.provider,
            instance_type=n.instance_type,
            gpu_model=n.gpu_model,
            gpu_count=n.gpu_count,
            region=fleet.region,
        )
        for n in fleet.nodes
    ]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rental_start(first_arrival: datetime, minutes: int = 5) -> datetime:
    """The fleet's rental begins at the whole ``minutes`` step before the first arrival."""
    step = timedelta(minutes=minutes)
    return _EPOCH + ((first_arrival - _EPOCH) // step) * step


def rental_window(events: list[InferenceEvent], minutes: int = 5) -> tuple[datetime, datetime]:
    """The fleet's rental: from the first arrival to the last finish, in whole 5-minute steps."""
    step = timedelta(minutes=minutes)
    first = min(e.started_at for e in events)
    last = max(e.finished_at for e in events)
    return rental_start(first, minutes), _EPOCH + -((_EPOCH - last) // step) * step


FOCUS_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "RegionId",
    "ResourceId",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "Tags",
)

# what the provider bills against the list price: a savings plan on the H100s, a smaller
# discount on the A100, list price on the L4s
DEMO_DISCOUNTS = {"H100": Decimal("0.72"), "A100": Decimal("0.90"), "L4": Decimal("1.00")}


def focus_bill(fleet: Fleet, start: datetime, end: datetime) -> list[dict[str, str]]:
    """A FOCUS 1.0 bill for the fleet's rental: usage per node per (part of an) hour at the
    billed price, an SLA credit on the spare node, and a tax line (not allocated)."""
    rows = []
    cuts = [start]
    hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while hour < end:
        cuts.append(hour)
        hour += timedelta(hours=1)
    cuts.append(end)
    period = (start.replace(day=1, hour=0, minute=0, second=0, microsecond=0),)
    month_end = (period[0] + timedelta(days=32)).replace(day=1)

    def row(**values: str) -> dict[str, str]:
        base = {c: "NULL" for c in FOCUS_COLUMNS}
        base.update(
            BillingAccountId="123456789012",
            BillingCurrency=fleet.currency,
            BillingPeriodStart=f"{period[0]:%Y-%m-%d %H:%M:%S}",
            BillingPeriodEnd=f"{month_end:%Y-%m-%d %H:%M:%S}",
            ProviderName=fleet.provider,
            RegionId=fleet.region,
            ServiceCategory="Compute",
            ServiceName="Amazon Elastic Compute Cloud",
        )
        base.update(values)
        return base

    total = Decimal(0)
    for node in fleet.nodes:
        discount = DEMO_DISCOUNTS.get(node.gpu_model, Decimal(1))
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            hours = Decimal((hi - lo).total_seconds()) / 3600
            listed = (node.price_per_hour * hours).quantize(Decimal("1e-10"))
            effective = (listed * discount).quantize(Decimal("1e-10"))
            total += effective
            rows.append(
                row(
                    BilledCost=str(effective),
                    ContractedCost=str(effective),
                    EffectiveCost=str(effective),
                    ListCost=str(listed),
                    ListUnitPrice=str(node.price_per_hour),
                    ChargeCategory="Usage",
                    ChargeDescription=f"{node.instance_type} instance hours",
                    ChargeFrequency="Usage-Based",
                    ChargePeriodStart=f"{lo:%Y-%m-%d %H:%M:%S}",
                    ChargePeriodEnd=f"{hi:%Y-%m-%d %H:%M:%S}",
                    ConsumedQuantity=str(hours),
                    ConsumedUnit="Hours",
                    PricingQuantity=str(hours),
                    PricingUnit="Hours",
                    PricingCategory="Committed" if discount < 1 else "Standard",
                    ResourceId=node.resource_id,
                    ResourceType="Virtual Machine",
                    SkuId=f"SKU-{node.instance_type}",
                    Tags=json.dumps({"team": "inference", "gpu": node.gpu_model}),
                )
            )
    spare = [n for n in fleet.nodes if not n.models]
    if spare:
        rows.append(
            row(
                BilledCost="-20.00",
                EffectiveCost="-20.00",
                ListCost="0",
                ContractedCost="-20.00",
                ChargeCategory="Credit",
                ChargeDescription="SLA credit: capacity not delivered",
                ChargeFrequency="One-Time",
                ChargePeriodStart=f"{start:%Y-%m-%d %H:%M:%S}",
                ChargePeriodEnd=f"{end:%Y-%m-%d %H:%M:%S}",
                ResourceId=spare[0].resource_id,
            )
        )
    tax = (total * Decimal("0.08")).quantize(Decimal("0.01"))
    rows.append(
        row(
            BilledCost=str(tax),
            EffectiveCost=str(tax),
            ListCost=str(tax),
            ContractedCost=str(tax),
            ChargeCategory="Tax",
            ChargeDescription="Sales tax",
            ChargeFrequency="Recurring",
            ChargePeriodStart=f"{start:%Y-%m-%d %H:%M:%S}",
            ChargePeriodEnd=f"{end:%Y-%m-%d %H:%M:%S}",
        )
    )
    return rows


def write_focus_csv(rows: list[dict[str, str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(FOCUS_COLUMNS), quoting=csv.QUOTE_NONNUMERIC)
        writer.writeheader()
        writer.writerows(rows)
    return path
