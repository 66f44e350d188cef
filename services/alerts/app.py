"""``inferledger run alerts``: evaluate budgets, fire alerts once, deliver them; a loop.

Streaming, it passes every ``INFERLEDGER_ALERTS_INTERVAL_SECONDS`` (1 s): an alert fires within
about that long of the commit of the ledger entry that crossed the line. Bounded
(``--until-idle``, as ``run all --until-idle`` starts it after the other processors), it
evaluates every budget once, then delivers until each alert is delivered or has used its
attempts, and exits. It reads and writes Postgres only, and publishes to ``budget-alerts``:
nothing of it lives in memory that a restart or a second processor would need.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from datetime import UTC, datetime

from services.alerts.deliver import Deliverer
from services.alerts.evaluate import Evaluator
from services.ledger.db import make_engine
from services.runtime import logs
from services.runtime.config import ALERTS, Settings
from services.runtime.health import postgres_errors, retry_sync
from services.runtime.kafka import make_producer

log = logs.get(__name__)


def run(
    settings: Settings,
    until_idle: bool = False,
    stop: threading.Event | None = None,
    counters: Counter[str] | None = None,
) -> Counter[str]:
    """Evaluate and deliver until ``stop`` is set (or, bounded, until nothing waits)."""
    assert settings.database_url
    counters = Counter() if counters is None else counters
    stop = stop or threading.Event()
    engine = make_engine(settings.database_url)
    producer = make_producer(settings)
    topic = settings.topic(ALERTS)

    def publish(alert_id: str, body: bytes) -> None:
        producer.send(topic, key=alert_id.encode(), value=body).get(timeout=30)

    evaluator = Evaluator(engine)
    deliverer = Deliverer(engine, settings, publish)
    pg_errors = postgres_errors()
    progress = logs.Progress("inferledger.alerts", counters)
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            fired = retry_sync("postgres", functools.partial(evaluator.run, now), pg_errors)
            for f in fired:
                counters[f"alerts.fired.{f.row['kind']}"] += 1
                log.info("alert fired", alert_id=f.row["alert_id"], budget_id=f.row["budget_id"],
                         kind=f.row["kind"], subject=f.row["subject"],
                         spend=str(f.row["spend"]), text=f.row["text"])  # fmt: skip
            delivered, waiting = retry_sync(
                "postgres", functools.partial(deliverer.deliver, now), pg_errors
            )
            counters["alerts.delivered"] += delivered
            counters["alerts.waiting"] = waiting
            progress.tick()
            if until_idle and waiting == 0:
                log.info("alerts finished", **dict(counters))
                break
            stop.wait(settings.alerts_interval_seconds)
    finally:
        producer.close(10)
        engine.dispose()
    return counters


def run_forever(settings: Settings, until_idle: bool) -> None:
    """:func:`run` in this process until SIGTERM or Ctrl-C (a clean stop between passes)."""
    import signal

    stop = threading.Event()
    counters: Counter[str] = Counter()

    def _stop(signum: int, _frame: object) -> None:
        log.info("alerts processor stopping", signal=signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    if settings.metrics_listen:
        from services.runtime.health import HEALTH, postgres_probe
        from services.runtime.metrics import serve

        assert settings.database_url
        HEALTH.add_probe("postgres", postgres_probe(settings.database_url))
        serve(settings.metrics_listen, "alerts", counters)
    started = time.monotonic()
    run(settings, until_idle, stop, counters)
    log.info("alerts processor stopped", seconds=round(time.monotonic() - started, 1))
