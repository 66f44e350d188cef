"""A large workload shaped like the real Azure LLM trace, produced straight to Kafka.

The trace (8,819 requests in about an hour) is repeated: each request comes ``copies`` times
(copy ``k`` arrives ``k`` microseconds later, so event ids and intervals differ), in arrival
order, spread over ``resources`` nodes and ``tenants`` tenants by a seeded hash. The
demo's service-time model gives finish times. Events are written as JSON directly (no pydantic
objects) so that generation does not dominate the run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.contracts import encode_event_batch
from services.contracts.wire import BATCH_SEPARATOR
from services.ingest.trace.azure import TRACE, read_trace

MODELS = (
    ("qwen2.5-coder-32b", 2, 9000, 45),
    ("llama-3.1-70b", 4, 7000, 30),
    ("llama-3.1-8b", 1, 12000, 90),
)


@dataclass(frozen=True)
class Workload:
    events: int
    resources: int = 64
    tenants: int = 20
    seed: str = "bench-1"

    def resource_ids(self) -> list[str]:
        return [f"bench-node-{i:03d}" for i in range(self.resources)]

    def window(self) -> tuple[datetime, datetime]:
        rows = list(read_trace(TRACE))
        start = min(r[0] for r in rows).replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=2)

    def rates(self) -> list[dict[str, str]]:
        start, end = self.window()
        return [
            {
                "resource_id": r,
                "price_per_hour": f"{10 + (i % 8) * 4:.2f}",
                "currency": "USD",
                "effective_from": start.isoformat(),
                "effective_to": end.isoformat(),
                "source": "list",
            }
            for i, r in enumerate(self.resource_ids())
        ]

    def generate(self) -> Iterator[dict[str, object]]:
        """Events in arrival order, as a fleet would send them: each trace request is repeated
        ``ceil(events / 8819)`` times (copy ``k`` arrives ``k`` microseconds later)."""
        trace = list(read_trace(TRACE))
        resources = self.resource_ids()
        copies = -(-self.events // len(trace))
        n = 0
        for row, (arrival, prompt, completion) in enumerate(trace):
            for copy in range(copies):
                if n >= self.events:
                    return
                h = hashlib.blake2b(f"{self.seed}|{copy}|{row}".encode(), digest_size=8).digest()
                x = int.from_bytes(h, "big")
                model, gpus, prefill, decode = MODELS[x % 3]
                start = arrival + timedelta(microseconds=copy)
                cached = prompt // 2 if (x >> 8) % 3 == 0 else 0
                first = start + timedelta(seconds=0.02 + (prompt - cached) / prefill)
                finish = first + timedelta(seconds=completion / decode)
                yield {
                    "event_id": f"b{copy}-{row}",
                    "tenant_id": f"tenant-{(x >> 16) % self.tenants:02d}",
                    "resource_id": resources[(x >> 24) % len(resources)],
                    "model": model,
                    "engine": "vllm",
                    "started_at": _ts(start),
                    "first_token_at": _ts(first),
                    "finished_at": _ts(finish),
                    "prompt_tokens": prompt,
                    "cached_prompt_tokens": cached,
                    "completion_tokens": completion,
                    "status": "ok" if (x >> 32) % 100 else "error",
                    "gpu_count": gpus,
                }
                n += 1


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_batches(
    events: Iterator[dict[str, object]],
    per_message: int,
    max_bytes: int = 900_000,
    linger_s: float = 1.0,
) -> Iterator[tuple[str, bytes, int]]:
    """Per-resource batch messages (``per_message`` 1: one event per message).

    Like an emitter with a linger: every resource's pending events are flushed each time
    event time moves ``linger_s`` on, or when a batch is full, so no batch spans more event
    time than a serving node would hold back."""
    pending: dict[str, list[bytes]] = {}
    size: dict[str, int] = {}
    window: str | None = None
    for e in events:
        r = str(e["resource_id"])
        raw = json.dumps(e, separators=(",", ":")).encode()
        if per_message == 1:
            yield r, raw, 1
            continue
        at = str(e["started_at"])
        if window is None:
            window = at
        elif _seconds_between(window, at) >= linger_s:
            for pr in sorted(pending):
                if pending[pr]:
                    yield pr, encode_event_batch(pr, pending[pr]), len(pending[pr])
            pending.clear()
            size.clear()
            window = at
        items = pending.setdefault(r, [])
        if items and (len(items) >= per_message or size[r] + len(raw) > max_bytes):
            yield r, encode_event_batch(r, items), len(items)
            items = pending[r] = []
            size[r] = 0
        items.append(raw)
        size[r] = size.get(r, 0) + len(raw) + BATCH_SEPARATOR
    for r, items in pending.items():
        if items:
            yield r, encode_event_batch(r, items), len(items)


def _seconds_between(a: str, b: str) -> float:
    return (
        datetime.fromisoformat(b.replace("Z", "+00:00"))
        - datetime.fromisoformat(a.replace("Z", "+00:00"))
    ).total_seconds()
