"""End-of-input markers the ledger writer has stored (table ``end_markers``).

``inferledger run --until-idle`` beside a running ``inferledger up`` writes stamped markers to
the input topics and waits here: the streaming attribution processor closes the buckets before
the markers' time and passes the markers on to cost-allocations, and the ledger writer stores
each one in the transaction of the entries before it. Once the run's marker is stored for every
cost-allocations partition, everything fed before the command is in the ledger.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.ledger.db import make_engine
from services.ledger.schema import end_markers, ledger_entries
from services.runtime.config import ALLOCATIONS, Settings


def partitions_marked(engine: Engine, run_id: str, topic: str) -> set[int]:
    """The partitions of ``topic`` on which the ledger writer has stored ``run_id``'s marker."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(end_markers.c.partition).where(
                end_markers.c.run_id == run_id, end_markers.c.topic == topic
            )
        )
        return {int(p) for p in rows.scalars()}


def wait_for_markers(
    engine: Engine,
    run_id: str,
    topic: str,
    partitions: set[int],
    timeout: float,
    on_wait: Callable[[set[int], float], None] | None = None,
    poll_seconds: float = 0.5,
) -> set[int]:
    """Wait until ``run_id``'s marker is stored for every partition in ``partitions``, at most
    ``timeout`` seconds; returns the partitions still missing (empty: all arrived)."""
    started = time.monotonic()
    while True:
        missing = partitions - partitions_marked(engine, run_id, topic)
        waited = time.monotonic() - started
        if not missing or waited >= timeout:
            return missing
        if on_wait is not None:
            on_wait(missing, waited)
        time.sleep(poll_seconds)


def ledger_rows(engine: Engine) -> int:
    """How many entries the ledger holds (the wait's progress)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one())


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
    finally:
        producer.close(10)
    run_id = uuid.uuid4().hex
    publish_end_markers(settings, input_topics, run_id)
    engine = make_engine(settings.database_url)
    try:
        return run_id, wait_for_markers(engine, run_id, alloc, partitions, timeout, on_wait)
    finally:
        engine.dispose()
