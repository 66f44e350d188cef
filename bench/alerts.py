"""Budget alerts, commit to alert: how long after the ledger writer commits the entry that
crosses a budget's threshold the alert fires, reaches a webhook, and is on ``budget-alerts``.

    ./dev bench-alerts                   # 20 rounds, the default 1 s alerts interval
    ./dev bench-alerts --rounds 5 --interval 0.5

It runs on a scratch database (``bench_alerts_<hex>``, dropped at the end) beside the configured
or local Postgres, and on the configured broker or an embedded Tansu broker started for it. The
alerts processor (``services.alerts.app.run``, as ``inferledger run alerts`` streams) runs in a
thread; a local HTTP receiver is every budget's webhook, and a consumer follows ``budget-alerts``.
Each round sets a fresh daily budget for a new tenant (thresholds 50, 80 and 100 %), waits a
random fraction of the interval (so commits fall anywhere in the processor's loop), then writes
one ledger batch with the writer's own transaction (``services.ledger.db.write_batch``) whose
usage entries take that tenant to 85 % of its budget, and notes the wall clock right after the
commit. For the 80 % alert it measures, from that commit:

- **fired_at**: ``budget_alerts.fired_at`` (Postgres's clock, same host; it is ``now()`` of the
  evaluator's transaction, i.e. when that pass began, so it can read slightly early);
- **alert visible**: when the ``budget_alerts`` row was first seen by polling every 20 ms;
- **webhook**: when the receiver got the POST (its clock);
- **topic**: when the consumer got the message from ``budget-alerts``.

Results: ``bench/results/alerts-<time>.json`` and ``.md``, and ``bench/results/alerts-latest.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from bench.measure import ROOT, machine
from services.alerts import app as alerts_app
from services.contracts.models import LedgerEntry
from services.ledger.db import entry_row, make_engine, migrate, write_batch
from services.ledger.schema import budgets
from services.ledger.writer import Batch
from services.runtime import logs
from services.runtime.config import ALERTS, Settings, load_settings
from services.runtime.kafka import ensure_topics
from services.runtime.stack import drop_database, local_stack, recreate_database

RESULTS = ROOT / "bench" / "results"
TARGET_SECONDS = 10.0  # issue 15: an alert within 10 s of the commit that crossed the line
CROSSED = Decimal("0.85")  # of the budget, written in one batch: crosses 50 % and 80 %
MEASURED = "0.8"  # the threshold whose alert is timed
ENTRIES = 5  # ledger entries per batch (one per node)
LATENCIES = ("fired_at", "alert_visible", "webhook", "topic")


class Arrivals:
    """Alerts seen somewhere, by (budget_id, threshold), with the local wall clock."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.count = 0
        self.cond = threading.Condition()

    def add(self, body: bytes) -> None:
        at = time.time()
        try:
            alert = json.loads(body)
            key = (str(alert["budget_id"]), str(alert.get("threshold")))
        except (ValueError, KeyError, TypeError):
            return
        with self.cond:
            self.count += 1
            self.seen.setdefault(key, at)
            self.cond.notify_all()

    def get(self, key: tuple[str, str]) -> float | None:
        with self.cond:
            return self.seen.get(key)


def webhook_receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    """An HTTP server on a free loopback port that answers 204 to every POST."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            arrivals.add(body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="webhook", daemon=True).start()
    return server


def follow_topic(settings: Settings, arrivals: Arrivals, stop: threading.Event) -> None:
    """Every message of ``budget-alerts`` into ``arrivals`` as it comes, until ``stop``."""
    topic = settings.topic(ALERTS)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        client_id="inferledger-bench-alerts",
        fetch_max_wait_ms=100,
        **settings.kafka_security(),
    )
    try:
        found = consumer.partitions_for_topic(topic) or ()
        parts = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(parts)
        consumer.topics()  # see services.runtime.kafka.read_records
        consumer.seek_to_beginning(*parts)
        while not stop.is_set():
            for messages in consumer.poll(timeout_ms=100).values():
                for m in messages:
                    if m.value is not None:
                        arrivals.add(m.value)
    finally:
        consumer.close()


def set_budget(engine: Any, tenant: str, amount: Decimal, webhook: str) -> str:
    """A daily budget for ``tenant``, as `inferledger budget set` inserts it."""
    budget_id = uuid.uuid4().hex
    with engine.begin() as conn:
        conn.execute(
            insert(budgets).values(
                budget_id=budget_id,
                name=f"{tenant} daily (bench)",
                tenant_id=tenant,
                period="day",
                amount=amount,
                currency="USD",
                thresholds=[Decimal("0.5"), Decimal("0.8"), Decimal("1.0")],
                include_idle_share=False,
                webhooks=[webhook],
                webhook_secret="bench-alerts-secret",
            )
        )
    return budget_id


def crossing_batch(tenant: str, amount: Decimal, now: datetime) -> Batch:
    """Usage entries of the current minute that bring ``tenant`` to 85 % of ``amount``."""
    bucket = now.replace(second=0, microsecond=0)
    share = (amount * CROSSED / ENTRIES).quantize(Decimal("0.000001"))
    rows = [
        entry_row(
            LedgerEntry(
                entry_id=uuid.uuid4().hex,
                entry_kind="usage",
                cost_basis="provisional",
                tenant_id=tenant,
                model="bench-model",
                resource_id=f"bench-node-{j}",
                bucket_start=bucket,
                bucket_seconds=60,
                completions=10,
                prompt_tokens=1000,
                completion_tokens=500,
                busy_seconds=Decimal("30"),
                amount=share,
                currency="USD",
            )
        )
        for j in range(ENTRIES)
    ]
    return Batch(entries=rows)


def wait_for(
    probe: Callable[[], float | None], deadline: float, step: float = 0.02
) -> float | None:
    while True:
        value = probe()
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(step)


def percentiles(values: list[float]) -> dict[str, Any]:
    """p50, p95 (nearest rank) and max, in seconds; with the count measured."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    s = sorted(values)

    def rank(p: float) -> float:
        return round(s[max(math.ceil(p * len(s)) - 1, 0)], 3)

    return {"n": len(s), "p50": rank(0.5), "p95": rank(0.95), "max": round(s[-1], 3)}


def run_rounds(
    settings: Settings, rounds: int, amount: Decimal, timeout: float, seed: int
) -> dict[str, Any]:
    """The whole measurement on ``settings`` (broker reachable, scratch database migrated)."""
    assert settings.database_url
    rng = random.Random(seed)
    engine = make_engine(settings.database_url)
    hooks, topic = Arrivals(), Arrivals()
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        stack.callback(engine.dispose)
        server = webhook_receiver(hooks)
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        webhook = f"http://127.0.0.1:{server.server_address[1]}/alerts"
        follower = threading.Thread(
            target=follow_topic, args=(settings, topic, stop), name="topic", daemon=True
        )
        processor = threading.Thread(
            target=alerts_app.run, args=(settings, False, stop), name="alerts", daemon=True
        )
        stack.callback(processor.join, 30)
        stack.callback(follower.join, 10)
        stack.callback(stop.set)
        follower.start()
        processor.start()
        per_round: list[dict[str, Any]] = []
        for i in range(rounds):
            tenant = f"t{i}"
            budget_id = set_budget(engine, tenant, amount, webhook)
            time.sleep(rng.uniform(0, settings.alerts_interval_seconds))
            batch = crossing_batch(tenant, amount, datetime.now(UTC))
            write_batch(engine, "bench-alerts", batch)
            committed = time.time()
            deadline = time.monotonic() + timeout
            key = (budget_id, MEASURED)

            def visible(budget_id: str = budget_id) -> float | None:
                with engine.connect() as conn:
                    seen = conn.execute(
                        text(
                            "SELECT fired_at FROM budget_alerts WHERE budget_id = :b "
                            "AND kind = 'threshold' AND threshold = :t"
                        ),
                        {"b": budget_id, "t": Decimal(MEASURED)},
                    ).scalar_one_or_none()
                return None if seen is None else time.time()

            visible_at = wait_for(visible, deadline)
            with engine.connect() as conn:
                fired = conn.execute(
                    text(
                        "SELECT fired_at FROM budget_alerts WHERE budget_id = :b "
                        "AND kind = 'threshold' AND threshold = :t"
                    ),
                    {"b": budget_id, "t": Decimal(MEASURED)},
                ).scalar_one_or_none()
                kinds = conn.execute(
                    text(
                        "SELECT kind || ':' || coalesce(CAST(threshold AS text), subject) "
                        "FROM budget_alerts WHERE budget_id = :b ORDER BY 1"
                    ),
                    {"b": budget_id},
                ).scalars()
                fired_alerts = list(kinds)
            hook_at = wait_for(functools.partial(hooks.get, key), deadline)
            topic_at = wait_for(functools.partial(topic.get, key), deadline)
            lat: dict[str, float | None] = {
                "fired_at": None if fired is None else fired.timestamp() - committed,
                "alert_visible": None if visible_at is None else visible_at - committed,
                "webhook": None if hook_at is None else hook_at - committed,
                "topic": None if topic_at is None else topic_at - committed,
            }
            per_round.append({"round": i, "tenant": tenant, "fired": fired_alerts, **lat})
            shown = {k: None if v is None else round(v, 3) for k, v in lat.items()}
            print(f"[round {i + 1}/{rounds}] {tenant}: {shown}", file=sys.stderr)
    latencies = {k: percentiles([r[k] for r in per_round if r[k] is not None]) for k in LATENCIES}
    missing = {k: sum(r[k] is None for r in per_round) for k in LATENCIES}
    worst = max((r[k] for r in per_round for k in ("webhook", "topic") if r[k] is not None),
                default=None)  # fmt: skip
    return {
        "rounds": rounds,
        "latency_seconds": latencies,
        "missing": missing,
        "webhook_posts": hooks.count,
        "topic_messages": topic.count,
        "target_seconds": TARGET_SECONDS,
        "target_met": bool(
            worst is not None and worst <= TARGET_SECONDS and not any(missing.values())
        ),
        "per_round": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in per_round
        ],
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    labels = {
        "fired_at": "commit → `budget_alerts.fired_at` (Postgres clock)",
        "alert_visible": "commit → alert row visible (polled every 20 ms)",
        "webhook": "commit → webhook received",
        "topic": "commit → message consumed from `budget-alerts`",
    }
    lines = [
        f"# Budget alerts: commit to alert ({report['started_at']})",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}, "
        f"commit {m['commit']}; broker: {report['broker']}; Postgres on the same host.",
        f"Rounds: {report['rounds']}; alerts interval: {report['alerts_interval_seconds']} s; "
        f"budget {report['budget_amount']} USD a day, one batch of {ENTRIES} usage entries to "
        f"{int(CROSSED * 100)} % of it; the {int(Decimal(MEASURED) * 100)} % alert timed.",
        "",
        "| latency | p50 s | p95 s | max s | measured |",
        "|---|---|---|---|---|",
    ]
    for k in LATENCIES:
        p = report["latency_seconds"][k]
        lines.append(f"| {labels[k]} | {p['p50']} | {p['p95']} | {p['max']} | {p['n']} |")
    verdict = "met" if report["target_met"] else "NOT met"
    lines += [
        "",
        f"Target: every alert delivered within {report['target_seconds']:g} s of the commit: "
        f"{verdict}. Webhook POSTs {report['webhook_posts']}, topic messages "
        f"{report['topic_messages']} (two alerts a round: 50 % and 80 %).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="the alerts processor's interval, s (default: INFERLEDGER_ALERTS_INTERVAL_SECONDS)",
    )
    parser.add_argument("--amount", default="10.00", help="each round's daily budget (USD)")
    parser.add_argument("--timeout", type=float, default=30, help="longest wait per round (s)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="the processor's INFO logs too")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM):  # both end the run the same way: cleaned up
        signal.signal(sig, interrupted)
    settings = load_settings()
    logs.configure("INFO" if args.verbose else "WARNING", settings.log_format)
    if args.interval is not None:
        settings = settings.model_copy(update={"alerts_interval_seconds": args.interval})
    run_id = uuid.uuid4().hex[:8]
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "broker": "configured" if settings.kafka_bootstrap else "embedded Tansu",
        "alerts_interval_seconds": settings.alerts_interval_seconds,
        "budget_amount": args.amount,
    }
    with local_stack(settings) as base, contextlib.ExitStack() as cleanup:
        assert base.database_url
        db_url = (
            make_url(base.database_url)
            .set(database=f"bench_alerts_{run_id}")
            .render_as_string(False)
        )
        if not args.keep_database:
            cleanup.callback(drop_database, db_url)
        recreate_database(db_url)
        migrate(db_url)
        s = base.model_copy(update={"database_url": db_url, "topic_prefix": f"alerts{run_id}."})
        ensure_topics(s)
        report["database"] = make_url(db_url).database
        report.update(run_rounds(s, args.rounds, Decimal(args.amount), args.timeout, args.seed))
    out: Path = args.results
    out.mkdir(parents=True, exist_ok=True)
    stamp = report["started_at"].replace(":", "").replace("-", "")
    (out / f"alerts-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (out / f"alerts-{stamp}.md").write_text(md)
    (out / "alerts-latest.md").write_text(md)
    print(md)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: the scratch database dropped, the broker stopped", file=sys.stderr)
        sys.exit(130)
