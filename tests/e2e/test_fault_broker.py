"""Issue 13: the broker restarted mid-run.

This test runs its own embedded Tansu broker on a fixed port. Tansu keeps its storage in memory
only, so a restarted broker comes back EMPTY: no topics, no messages, no committed offsets. The
test therefore checks what can be checked on such a broker, and says so:

- the streaming processors survive the outage and reconnect to the new broker on the same
  port (they stay up and, once the topics are re-created and the input re-sent, write the
  rest of the ledger);
- re-sending input the ledger has already accounted (every rate and event is sent again after
  the restart, as a producer replaying its buffer would) counts nothing twice: event ids are
  the idempotency key and entry ids are deterministic;
- after ``run all --until-idle`` the ledger equals the pure core's answer and counts every
  event exactly once.

With Apache Kafka (data kept) the same test would also cover resuming from committed offsets.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from services.runtime.config import Settings
from services.runtime.kafka import ensure_topics
from services.runtime.stack import EmbeddedBroker, free_port
from services.runtime.supervise import COMPONENTS
from tests.helpers import (
    cli,
    counting_faults,
    expected_positions,
    explain_lost,
    fault_scenario,
    kill_group,
    ledger,
    position_diff,
    positions,
    process_tree,
    publish_events,
    publish_rates,
    start_run,
    wait_until,
)

SEED = 47

# bounded: a hang fails this test, not the suite
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_broker_restarted_mid_run(db_url, tmp_path):
    events, rates = fault_scenario(SEED)
    stream = sorted(events, key=lambda e: e.finished_at)
    rng = random.Random(SEED)
    chunks = [stream[i : i + 50] for i in range(0, len(stream), 50)]
    for c in chunks:
        rng.shuffle(c)
    port = free_port()
    broker = EmbeddedBroker(port=port).start(tmp_path / "broker-1.log")
    settings = Settings(
        kafka_bootstrap=broker.bootstrap, database_url=db_url, topic_prefix="fb.", partitions=4
    )
    ensure_topics(settings)
    env = dict(
        os.environ,
        INFERLEDGER_KAFKA_BOOTSTRAP=broker.bootstrap,
        INFERLEDGER_DATABASE_URL=db_url,
        INFERLEDGER_TOPIC_PREFIX="fb.",
        INFERLEDGER_LOG_FORMAT="json",
    )
    observed: list[str] = []
    publish_rates(settings, rates)
    log = tmp_path / "stream.log"
    proc = start_run(env, log, "all")
    try:
        time.sleep(4)
        for c in chunks[:4]:
            publish_events(settings, c)
            time.sleep(2)
        wait_until(lambda: len(ledger(db_url)) > 0, 30)
        children = process_tree(proc.pid)[1:]
        before = len(ledger(db_url))
        broker.stop()
        time.sleep(10)
        broker = EmbeddedBroker(port=port).start(tmp_path / "broker-2.log")
        ensure_topics(settings)  # the new broker has nothing: topics come back empty
        publish_rates(settings, rates)
        for c in chunks:  # everything again: what was accounted must not count twice
            publish_events(settings, c)
            time.sleep(1)
        grew = wait_until(lambda: len(ledger(db_url)) > before, 60)
        alive = [p for p in children if p in process_tree(proc.pid)]
        if proc.poll() is not None or len(alive) != len(COMPONENTS):
            observed.append(f"processors exited: run all rc={proc.poll()}, alive {alive}")
        if not grew:
            observed.append(f"no new ledger entry within 60 s of the restart ({before} before)")
    finally:
        proc.send_signal(signal.SIGTERM)
        if kill_group(proc, 0, 40) is None:
            kill_group(proc, signal.SIGKILL)
    try:
        cli(env, "run", "all", "--until-idle", timeout=180)
        faults = counting_faults(db_url, events)
        got, want = positions(db_url), expected_positions(events, rates)
        if faults != {"missing": [], "twice": [], "unknown": []}:
            observed.append(
                f"counting: {len(faults['missing'])} missing {faults['missing'][:8]}, "
                f"{len(faults['twice'])} twice {faults['twice'][:8]}"
            )
            observed += explain_lost(db_url, events, faults["missing"][:10])
        if got != want:
            observed.append(position_diff(got, want))
    finally:
        broker.stop()
    assert not observed, "\n".join(observed)
