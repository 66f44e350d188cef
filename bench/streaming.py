"""The streaming case: wall-clock event time offered to processors that stream, and how long
after the earliest moment the design allows each bucket to close its entries were visible."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, text

from bench.cases import fresh_database
from services.runtime.config import EVENTS, RATES, Settings
from services.runtime.kafka import ensure_topics, make_producer


def streaming_latency(
    base: Settings, rate: int, seconds: int, bucket: int, lateness: int, resources: int
) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds`` with event time = wall clock to processors that
    stream (`run all`, no --until-idle), and measure, per closed (resource, bucket), when its
    first entry was visible in Postgres minus the earliest moment the design allows it to
    close (bucket end + allowed lateness)."""
    prefix = f"lat{uuid.uuid4().hex[:8]}."
    db_url = fresh_database(base, f"bench_{prefix[:-1]}")
    settings = base.model_copy(update={"topic_prefix": prefix, "database_url": db_url})
    ensure_topics(settings)
    env = dict(
        os.environ,
        INFERLEDGER_KAFKA_BOOTSTRAP=settings.kafka_bootstrap or "",
        INFERLEDGER_DATABASE_URL=db_url,
        INFERLEDGER_TOPIC_PREFIX=prefix,
        INFERLEDGER_BUCKET_SECONDS=str(bucket),
        INFERLEDGER_ALLOWED_LATENESS_SECONDS=str(lateness),
        INFERLEDGER_LOG_FORMAT="json",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "run", "all"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    producer = make_producer(settings, linger_ms=5)
    nodes = [f"lat-node-{i:03d}" for i in range(resources)]
    now = datetime.now(UTC)
    for node in nodes:
        producer.send(
            settings.topic(RATES),
            key=node,
            value=json.dumps(
                {
                    "resource_id": node,
                    "price_per_hour": "20.00",
                    "currency": "USD",
                    "effective_from": now.isoformat(),
                }
            ).encode(),
        )
    time.sleep(8)  # consumer groups join (half the session timeout on Tansu)
    tick = 0.05
    per_tick = max(1, int(rate * tick))
    sent = 0
    # one template per event, formatted with the tick's timestamps: the load generator shares
    # the machine with the pipeline, so it must cost little per event
    template = (
        '{"event_id":"l%d","tenant_id":"tenant-%02d","resource_id":"%s","model":"m",'
        '"engine":"vllm","started_at":"%s","finished_at":"%s","prompt_tokens":500,'
        '"completion_tokens":50,"status":"ok"}'
    )
    heads = {n: b'{"resource_id":"' + n.encode() + b'","events":[' for n in nodes}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        t0 = time.monotonic()
        finish = datetime.now(UTC)
        fin = finish.isoformat()
        begin = (finish - timedelta(milliseconds=300)).isoformat()
        batches: dict[str, list[str]] = {}
        for i in range(sent, sent + per_tick):
            node = nodes[i % len(nodes)]
            batches.setdefault(node, []).append(template % (i, i % 20, node, begin, fin))
        for node, items in batches.items():
            producer.send(
                settings.topic(EVENTS),
                key=node,
                value=heads[node] + ",".join(items).encode() + b"]}",
            )
        sent += per_tick
        time.sleep(max(0.0, tick - (time.monotonic() - t0)))
    producer.flush(60)
    offered_s = time.monotonic() - started
    time.sleep(bucket + lateness + 10)  # let the last full buckets close
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = (
            conn.execute(
                text(
                    "SELECT extract(epoch FROM min(recorded_at)) "
                    "- extract(epoch FROM bucket_start) - :w - :l FROM ledger_entries "
                    "WHERE entry_kind IN ('usage', 'idle') "
                    "AND completions + work_units > 0 GROUP BY resource_id, bucket_start"
                ),
                {"w": bucket, "l": lateness},
            )
            .scalars()
            .all()
        )
    engine.dispose()
    lat = sorted(float(x) for x in rows)
    if not lat:
        return {"offered_events_per_s": rate, "buckets": 0}

    def q(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3)

    return {
        "offered_events_per_s": rate,
        "achieved_offer_events_per_s": round(sent / offered_s),
        "seconds": seconds,
        "bucket_seconds": bucket,
        "allowed_lateness_seconds": lateness,
        "buckets": len(lat),
        "p50_s": q(0.5),
        "p99_s": q(0.99),
        "max_s": round(lat[-1], 3),
    }
