"""The emitter SDK against the real broker: batches per resource, the full-buffer policy,
dead letters for invalid events, flush and close."""

from __future__ import annotations

import threading
import time
from typing import Any

from services.ingest import Emitter
from services.runtime.config import Settings
from services.runtime.kafka import make_producer
from tests.helpers import read_topic


def event(n: int, resource: str = "node-1") -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "tenant_id": "acme",
        "resource_id": resource,
        "model": "m",
        "engine": "vllm",
        "started_at": "2024-01-01T00:00:00Z",
        "finished_at": "2024-01-01T00:00:30Z",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "status": "ok",
    }


def events_on(settings: Settings) -> list[dict[str, Any]]:
    assert settings.kafka_bootstrap is not None  # the fixture's embedded broker
    return read_topic(settings.kafka_bootstrap, settings.topic("inference-events"), quiet_s=2)


def test_batches_per_resource_and_dead_letters_invalid_events(settings: Settings) -> None:
    emitter = Emitter(settings, linger_seconds=60, max_batch_events=2)
    for n in range(5):
        assert emitter.record(event(n, "node-1"))
    assert emitter.record(event(9, "node-2"))
    bad = {**event(7), "prompt_tokens": -1}
    assert emitter.record(bad) is False
    assert emitter.flush(30)
    assert emitter.stats["sent"] == 6 and emitter.stats["rejected_invalid"] == 1
    emitter.close()

    batches = events_on(settings)
    assert sorted((b["resource_id"], len(b["events"])) for b in batches) == [
        ("node-1", 1),
        ("node-1", 2),
        ("node-1", 2),
        ("node-2", 1),
    ]
    assert all(e["resource_id"] == b["resource_id"] for b in batches for e in b["events"])
    assert settings.kafka_bootstrap is not None
    dlq = read_topic(settings.kafka_bootstrap, settings.topic("inference-events") + ".dlq", 2)
    assert [(d["source"], d["reason"]) for d in dlq] == [("emitter", "invalid")]
    assert "prompt_tokens" in dlq[0]["detail"] and '"e7"' in dlq[0]["payload"]


class GatedProducer:
    """The real producer, whose ``send`` waits for a gate: a broker that stalls."""

    def __init__(self, settings: Settings) -> None:
        self.real = make_producer(settings)
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def send(self, *args: Any, **kwargs: Any) -> Any:
        self.waiting.set()
        self.gate.wait(60)
        return self.real.send(*args, **kwargs)

    def flush(self, timeout: float | None = None) -> None:
        self.real.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        self.real.close(timeout)


def wait_until(cond: Any, limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_full_buffer_drops_and_counts_and_never_blocks(settings: Settings) -> None:
    producer = GatedProducer(settings)
    emitter = Emitter(
        settings,
        buffer_events=1,
        linger_seconds=60,
        max_batch_events=1,
        producer=producer,
    )
    assert emitter.record(event(1))
    wait_until(lambda: emitter._queue.qsize() == 0)  # noqa: SLF001
    assert emitter.record(event(2))  # the thread takes it and sends e1: the send stalls
    wait_until(producer.waiting.is_set)
    wait_until(lambda: emitter._queue.qsize() == 0)  # noqa: SLF001
    assert emitter.record(event(3))  # fills the buffer of one
    started = time.monotonic()
    assert emitter.record(event(4)) is False  # full: dropped at once, not waited for
    assert time.monotonic() - started < 0.05
    assert emitter.stats["dropped_full"] == 1
    producer.gate.set()
    emitter.close()
    assert emitter.record(event(5)) is False and emitter.stats["dropped_closed"] == 1
    sent = sorted(e["event_id"] for b in events_on(settings) for e in b["events"])
    assert sent == ["e1", "e2", "e3"]


def test_close_sends_what_is_queued(settings: Settings) -> None:
    emitter = Emitter(settings, linger_seconds=600)
    for n in range(20):
        emitter.record(event(n, f"node-{n % 3}"))
    emitter.close()  # long before the linger: close flushes
    assert emitter.stats["sent"] == 20
    assert sum(len(b["events"]) for b in events_on(settings)) == 20
