"""A simulated GPU fleet, and the deterministic replay of a trace's requests on it.

Service-time model (stated, simple, deterministic): a request arrives at its trace arrival time
(``started_at``). A node runs at most ``max_running`` requests at once (continuous batching up to
its batch slots; absent: no limit): a request that arrives when every slot is busy waits in the
node's queue (first come, first served) until the earliest running request finishes, so a node
running hot gives long times to first token (real latency objective misses). Once it runs, its
time to first token is ``0.02 s + uncached_prompt_tokens / prefill_tps`` after it got its slot,
then it decodes at ``decode_tps`` tokens per second:
``finished_at = first_token_at + completion_tokens / decode_tps``. Tenant, model, node,
prefix-cache hits and status come from a seeded SHA-256 of the row number, so every run of the
same trace and seed gives the same events and the same ledger.

A fleet is data: a JSON description (:func:`default_fleet` is the demo's, in
``data/default_fleet.json``) loaded by :meth:`Fleet.load` or :meth:`Fleet.from_dict`.
"""

from __future__ import annotations

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
from services.ingest.trace.azure import TRACE, read_trace

DEFAULT_FLEET_FILE = Path(__file__).parent / "data" / "default_fleet.json"


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
    max_running: int | None = None  # batch slots: requests beyond them queue (None: no limit)


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
    slos: dict[str, dict[str, float]] = field(default_factory=dict)
    """The latency objectives the demo judges its requests by (``INFERLEDGER_SLOS``'s form)."""

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
            if n.max_running is not None and n.max_running < 1:
                raise FleetError(f"node {n.resource_id}: max_running must be >= 1")
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
                    None if n.get("max_running") is None else int(n["max_running"]),
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
            slos={str(k): dict(v) for k, v in d.get("slos", {}).items()},
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


def default_fleet() -> dict[str, Any]:
    """The demo fleet's description (``data/default_fleet.json``), a fresh copy on every call:
    six nodes (one spare), three models and five tenants; the shape of a ``--fleet`` file."""
    data: dict[str, Any] = json.loads(DEFAULT_FLEET_FILE.read_text())
    return data


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
    # per node: when each of its busy batch slots frees (a min-heap), for nodes with a limit
    slots: dict[str, list[datetime]] = {n.resource_id: [] for n in fleet.nodes}
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
        running = slots[node.resource_id]
        admitted = arrival
        if node.max_running is not None:
            while running and running[0] <= arrival:  # finished before this arrival
                heapq.heappop(running)
            if len(running) >= node.max_running:  # every slot busy: wait for the first free
                admitted = heapq.heappop(running)
        ttft = 0.02 + (prompt - cached) / model.prefill_tps
        first = admitted + timedelta(seconds=ttft)
        finished = first + timedelta(seconds=completion / model.decode_tps)
        if node.max_running is not None:
            heapq.heappush(running, finished)
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
