"""read_batches on the real broker: whole fetched batches from the aiokafka consumer under faust.

Every message arrives once, in offset order within its partition; a batch carries several
partitions (no partition drains alone while the others wait); faust's own fetch never sees the
topic; and nothing is committed by reading (the processors commit after storing).
"""

from __future__ import annotations

import asyncio
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
