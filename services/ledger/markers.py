"""End-of-input markers the ledger writer has stored (table ``end_markers``).

``inferledger run --until-idle`` beside a running ``inferledger up`` writes stamped markers to
the input topics and waits here: the streaming attribution processor closes the buckets before
the markers' time and passes the markers on to cost-allocations, and the ledger writer stores
each one in the transaction of the entries before it. Once the run's marker is stored for every
cost-allocations partition, covering every events partition (each worker passes its markers on
for the events partitions it owns), everything fed before the command is in the ledger.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.contracts.markers import heartbeat_coverage
from services.ledger.db import make_engine
from services.ledger.schema import end_markers
from services.runtime.config import ALLOCATIONS, EVENTS, Settings


def uncovered(
    engine: Engine, run_id: str, topic: str, partitions: set[int], events: set[int]
) -> set[int]:
    """The partitions of ``topic`` on which the stored markers of ``run_id`` do not yet cover
    every events partition (see services.contracts.markers)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(end_markers.c.partition, end_markers.c.run_id).where(
                end_markers.c.topic == topic,
                end_markers.c.run_id.startswith(f"{run_id}.", autoescape=True),
            )
        ).all()
    return not_covered([(int(p), str(m)) for p, m in rows], run_id, partitions, events)


def not_covered(
    markers: Iterable[tuple[int, str]], run_id: str, partitions: set[int], events: set[int]
) -> set[int]:
    """Of ``partitions``, those on which the markers read there (``(partition, marker id)``)
    of ``run_id`` do not together cover every events partition in ``events``."""
    covered: dict[int, set[int]] = {}
    for partition, marker_id in markers:
        covered.setdefault(partition, set()).update(heartbeat_coverage(marker_id, run_id))
    return {p for p in partitions if not events <= covered.get(p, set())}


def wait_for_markers(
    engine: Engine,
    run_id: str,
    topic: str,
    partitions: set[int],
    events: set[int],
    timeout: float,
    on_wait: Callable[[set[int], float], None] | None = None,
    poll_seconds: float = 0.5,
) -> set[int]:
    """Wait until ``run_id``'s markers cover every events partition on every partition of
    ``topic``, at most ``timeout`` seconds; returns the partitions still missing (empty: done)."""
    started = time.monotonic()
    while True:
        missing = uncovered(engine, run_id, topic, partitions, events)
        waited = time.monotonic() - started
        if not missing or waited >= timeout:
            return missing
        if on_wait is not None:
            on_wait(missing, waited)
        time.sleep(poll_seconds)


def follow(
    settings: Settings,
    input_topics: list[str],
    timeout: float,
    on_wait: Callable[[set[int], float], None] | None = None,
) -> tuple[str, set[int]]:
    """Wait for running streaming processors to account for everything fed so far: stamped
    end markers on ``input_topics``, then their run's markers in ``end_markers`` for every
    cost-allocations partition. Returns the run id and the partitions still missing."""
    from services.runtime.kafka import make_producer, publish_end_markers

    assert settings.database_url
    alloc = settings.topic(ALLOCATIONS)
    producer = make_producer(settings)
    try:
        partitions = set(producer.partitions_for(alloc) or set())
        events = set(producer.partitions_for(settings.topic(EVENTS)) or set())
    finally:
        producer.close(10)
    run_id = uuid.uuid4().hex
    publish_end_markers(settings, input_topics, run_id)
    engine = make_engine(settings.database_url)
    try:
        missing = wait_for_markers(engine, run_id, alloc, partitions, events, timeout, on_wait)
        return run_id, missing
    finally:
        engine.dispose()
