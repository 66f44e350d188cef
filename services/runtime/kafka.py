"""Kafka plumbing shared by every process: topics, producers, dead letters, end markers."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.serializer import Serializer

from services.contracts import DeadLetter, EndOfInput, dumps, encode_dead_letter
from services.runtime import logs
from services.runtime.config import ALERTS, ALLOCATIONS, BILLING, EVENTS, PRICES, RATES, Settings

log = logs.get(__name__)
TOPICS = (EVENTS, RATES, BILLING, ALLOCATIONS, ALERTS, PRICES)
# Rates are a history, never compacted: compaction by resource_id would keep only each node's
# latest rate and lose the prices of every earlier hour (DESIGN.md section 2). Keep everything.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    RATES: {"cleanup.policy": "delete", "retention.ms": "-1"},
    BILLING: {"cleanup.policy": "delete", "retention.ms": "-1"},
    PRICES: {"cleanup.policy": "delete", "retention.ms": "-1"},  # a history too
}


def all_topic_names(settings: Settings) -> list[str]:
    names = [settings.topic(t) for t in TOPICS]
    return names + [f"{n}.dlq" for n in names]


def ensure_topics(settings: Settings, timeout: float = 30) -> None:
    """Create every topic (and its dead-letter topic) with the configured partition count."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.kafka_bootstrap,
                client_id="inferledger-admin",
                **settings.kafka_security(),
            )
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = []
        for name in all_topic_names(settings):
            if name in existing:
                continue
            base = name.removeprefix(settings.topic_prefix)
            configs = dict(TOPIC_CONFIGS.get(base, {}))
            wanted.append(
                NewTopic(
                    name, settings.partitions, settings.replication_factor, topic_configs=configs
                )
            )
        for topic in wanted:  # one by one: a racing creator must not fail the others
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([topic])
    finally:
        admin.close()


class KeyEncoder(Serializer):  # type: ignore[misc]
    """Message keys are resource ids: str to UTF-8 bytes (bytes and None pass through)."""

    def serialize(self, topic: str, headers: Any, data: Any) -> bytes | None:
        return data.encode() if isinstance(data, str) else data


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "linger_ms": 20,
        "max_request_size": max(settings.max_message_bytes * 2, 1_048_576),
        "key_serializer": KeyEncoder(),
        "client_id": "inferledger-producer",
        **settings.kafka_security(),
    }
    config.update(overrides)
    return KafkaProducer(**config)


def dead_letter(
    source_topic: str,
    reason: str,
    detail: str,
    payload: bytes | str | Any,
    limit: int,
    *,
    source: str,
    partition: int | None = None,
    offset: int | None = None,
    credential: str | None = None,
    credential_id: str | None = None,
) -> bytes:
    """The dead-letter record (:class:`~services.contracts.DeadLetter`, encoded): why, from
    where, and the original payload (truncated to ``limit`` characters).

    ``credential`` and ``credential_id`` name who sent it where a component authenticates its
    callers (the gateway: the token's configured name and a non-secret id of the token, never
    the token itself); ``dlq replay`` authorizes the payload again against them."""
    if isinstance(payload, bytes):
        text = payload.decode("utf-8", errors="backslashreplace")
    elif isinstance(payload, str):
        text = _no_surrogates(payload)
    else:
        text = json.dumps(payload, default=str)
    letter = DeadLetter(
        reason=reason,
        detail=_no_surrogates(detail[:2000]),
        source=source,
        topic=source_topic,
        partition=partition,
        offset=offset,
        payload=text[:limit],
        payload_truncated=len(text) > limit,
        payload_size=len(text),
        rejected_at=datetime.now(UTC),
        credential=credential if credential_id is not None else None,
        credential_id=credential_id,
    )
    return encode_dead_letter(letter)


def _no_surrogates(text: str) -> str:
    """``text`` with any lone surrogate written as its escape (UTF-8 cannot hold one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text


Record = tuple[str, int, int, bytes | None, bytes | None]  # topic, partition, offset, key, value


def read_records(
    settings: Settings, topics: list[str], timeout_s: float = 30, client_id: str = "inferledger"
) -> Iterator[Record]:
    """Every record of ``topics`` from the beginning to their end, as they are now.

    The end is each partition's high watermark as the fetch responses report it (some brokers'
    ListOffsets answers lag behind a multi-record batch), reached when a poll brings nothing
    new. ``timeout_s`` bounds a wait for records that the high watermark says exist."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        client_id=client_id,
        **settings.kafka_security(),
    )
    try:
        parts = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not parts:
            return
        consumer.assign(parts)
        # assigning asks for a metadata refresh of these topics, sent in the background once
        # the retry backoff passed: behind a fetch long-poll on the same connection, its answer
        # may come after the last poll, and closing the consumer then cancels it, which
        # kafka-python logs as "ERROR Metadata refresh: failed Cancelled" on every clean run.
        # topics() waits for that refresh (and makes one of all topics) before any fetch.
        consumer.topics()
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while True:
            batch = consumer.poll(timeout_ms=300)
            for tp, messages in batch.items():
                for m in messages:
                    yield tp.topic, tp.partition, m.offset, m.key, m.value
            if batch:
                quiet = 0
                deadline = time.monotonic() + timeout_s
                continue
            quiet += 1
            marks = [consumer.highwater(tp) for tp in parts]
            behind = [
                tp
                for tp, hw in zip(parts, marks, strict=True)
                if hw is not None and consumer.position(tp) < hw
            ]
            if not behind and (all(hw is not None for hw in marks) or quiet >= 5):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"records of {behind} did not arrive in {timeout_s} s")
    finally:
        consumer.close()


def publish_end_markers(
    settings: Settings, topics: list[str], run_id: str, at: datetime | None = None
) -> dict[tuple[str, int], int]:
    """Write an end-of-input marker of ``run_id`` to every partition of ``topics``, stamped
    ``at`` (default: now), which a streaming processor reads as a heartbeat. Returns the
    offset each marker was written at, ``{(topic, partition): offset}``."""
    producer = make_producer(settings)
    try:
        marker = dumps(EndOfInput(run_id=run_id, at=at or datetime.now(UTC)))
        sent = {}
        for topic in topics:
            partitions = producer.partitions_for(topic) or set()
            for p in sorted(partitions):
                sent[topic, p] = producer.send(topic, value=marker, partition=p)
        producer.flush(30)
        return {where: int(future.get(30).offset) for where, future in sent.items()}
    finally:
        producer.close(10)
