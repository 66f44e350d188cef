"""read_batches on the real broker: whole fetched batches from the aiokafka consumer under faust.

Every message arrives once, in offset order within its partition; a batch carries several
partitions (no partition drains alone while the others wait); faust's own fetch never sees the
topic; and nothing is committed by reading (the processors commit after storing).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from typing import Any

from services.runtime.config import EVENTS, Settings
from services.runtime.faustapp import make_app, read_batches, read_in_batches, run_until
from services.runtime.kafka import make_producer


def _publish(settings: Settings, topic: str, per_partition: int) -> dict[int, list[bytes]]:
    producer = make_producer(settings)
    sent: dict[int, list[bytes]] = defaultdict(list)
    for i in range(per_partition):
        for p in range(settings.partitions):
            value = f"{p}:{i}".encode()
            producer.send(topic, value=value, partition=p)
            sent[p].append(value)
    producer.flush()
    producer.close()
    return sent


def _committed(settings: Settings, group: str, topic: str) -> dict[int, int | None]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(settings.partitions)}
    finally:
        consumer.close()


def test_every_message_once_in_order_several_partitions_a_batch_nothing_committed(
    settings: Settings,
) -> None:
    topic = settings.topic(EVENTS)
    per_partition = 300
    sent = _publish(settings, topic, per_partition)
    total = per_partition * settings.partitions
    group = f"test-read-batches-{uuid.uuid4().hex[:8]}"
    app = make_app(settings.model_copy(update={"take_max": 100}), group)
    faust_topic = app.topic(topic, acks=False)
    read_in_batches(app, faust_topic)
    got: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    batches: list[set[int]] = []
    done = asyncio.Event()
    seen_by_faust: list[Any] = []
    faust_fetches: list[int] = []  # faust's fetcher runs all along, and gets nothing of ours

    async def take(batch: list[tuple[Any, list[Any]]]) -> None:
        batches.append({tp.partition for tp, _ in batch})
        for tp, records in batch:
            assert tp.topic == topic and len(records) <= 100
            got[tp.partition] += [(r.offset, r.value) for r in records]

    async def finish() -> None:  # everything read, and faust's fetcher has run meanwhile
        while sum(len(v) for v in got.values()) < total or len(faust_fetches) < 2:
            await asyncio.sleep(0.1)
        done.set()

    @app.task
    async def reader() -> None:
        consumer: Any = app.consumer
        original = consumer._getmany

        async def spy(active_partitions: Any, timeout: float) -> Any:
            records = await original(active_partitions, timeout)
            faust_fetches.append(len(records))
            seen_by_faust.extend(tp for tp in records if tp.topic == topic)
            return records

        consumer._getmany = spy  # faust's own fetch: must never return the batch topic
        asyncio.ensure_future(finish())
        await read_batches(app, {topic}, take, max_records=100, timeout=0.2)

    asyncio.run(asyncio.wait_for(run_until(app, done), 120))

    assert sorted(got) == list(range(settings.partitions))
    for p, rows in got.items():
        offsets = [o for o, _ in rows]
        assert offsets == list(range(per_partition)), f"partition {p}: not once each, in order"
        assert [v for _, v in rows] == sent[p]
    assert any(len(parts) > 1 for parts in batches), batches[:10]
    assert faust_fetches and not seen_by_faust
    assert all(o is None for o in _committed(settings, group, topic).values())


def test_a_fetch_dropped_for_a_new_generation_is_read_again(
    settings: Settings, monkeypatch: Any
) -> None:
    """A fetch that spans a rebalance returns records of the new assignment, read from where
    faust's seek put the partition (aiokafka's fetched_records waits out a reassignment and
    then returns what it fetched for the new one). read_batches drops such a fetch, but
    aiokafka's position has already passed those records: unless they are put back, they are
    never handed over, and the processors' next commit goes past them."""
    from services.runtime import faustapp

    topic = settings.topic(EVENTS)
    per_partition = 50
    sent = _publish(settings, topic, per_partition)
    total = per_partition * settings.partitions
    group = f"test-read-batches-gen-{uuid.uuid4().hex[:8]}"
    app = make_app(settings.model_copy(update={"take_max": 20}), group)
    read_in_batches(app, app.topic(topic, acks=False))
    got: dict[int, list[int]] = defaultdict(list)
    done = asyncio.Event()
    real = faustapp._fetch_fairly
    rebalanced: list[int] = []

    async def fetch_across_a_rebalance(*args: Any) -> Any:
        records = await real(*args)
        if records and not rebalanced:  # the group's generation moved on during this fetch
            rebalanced.append(sum(len(r) for r in records.values()))
            app.consumer_generation_id += 1
        return records

    monkeypatch.setattr(faustapp, "_fetch_fairly", fetch_across_a_rebalance)

    async def take(batch: list[tuple[Any, list[Any]]]) -> None:
        for tp, records in batch:
            got[tp.partition] += [r.offset for r in records]
        if sum(len(v) for v in got.values()) >= total:
            done.set()

    @app.task
    async def reader() -> None:
        await read_batches(app, {topic}, take, max_records=20, timeout=0.2)

    with contextlib.suppress(asyncio.TimeoutError):
        asyncio.run(asyncio.wait_for(run_until(app, done), 30))

    assert rebalanced and rebalanced[0] > 0
    for p in range(settings.partitions):
        assert got[p] == list(range(len(sent[p]))), f"partition {p}: records lost or reordered"
