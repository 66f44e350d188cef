"""Helpers shared by integration and e2e tests."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import requests
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import create_engine, text

from services.accounting import AccountingSettings, Book, ClosedBucket
from services.attribution.processor import to_rate, to_request
from services.contracts import GpuRate, InferenceEvent


def cli(
    env: dict[str, str], *args: str, stdin: bytes | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"inferledger {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc


def query_rows(db_url: str, sql: str) -> list[Any]:
    """All rows of one query against a test database (its own engine, disposed after)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def ledger(db_url: str) -> dict[str, tuple[str, str | None, str | None, Decimal, int]]:
    rows = query_rows(
        db_url,
        "SELECT entry_id, entry_kind, tenant_id, model, amount, completions FROM ledger_entries",
    )
    return {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}


def expected_ledger(
    events: list[InferenceEvent], rates: list[GpuRate], settings: AccountingSettings | None = None
) -> dict[str, tuple[str, str | None, str | None, Decimal, int]]:
    """What the ledger must hold, computed by the pure core directly (no Kafka, no faust)."""
    book = Book(settings or AccountingSettings())
    for r in rates:
        book.add_rate(to_rate(r))
    for e in events:
        book.add_request(to_request(e))
    closed: list[ClosedBucket] = book.flush()
    return {
        e.entry_id: (e.entry_kind, e.tenant_id, e.model, e.amount, e.completions)
        for c in closed
        for e in c.entries
    }


Position = tuple[Decimal, int, int, int, int, int]


def positions(db_url: str) -> dict[tuple[str, int, str | None, str | None], Position]:
    """The ledger's net position per (resource, bucket start in epoch seconds, tenant, model):
    amount and counts summed over every entry kind (zero positions left out)."""
    rows = query_rows(
        db_url,
        "SELECT resource_id, extract(epoch FROM bucket_start)::bigint, tenant_id, "
        "model, sum(amount), sum(completions), sum(failed_requests), "
        "sum(prompt_tokens), sum(cached_prompt_tokens), sum(completion_tokens) "
        "FROM ledger_entries GROUP BY 1, 2, 3, 4",
    )
    return {
        (r[0], r[1], r[2], r[3]): tuple(r[4:])  # type: ignore[misc]
        for r in rows
        if any(r[4:])
    }


def expected_positions(
    events: list[InferenceEvent], rates: list[GpuRate]
) -> dict[tuple[str, int, str | None, str | None], Position]:
    """The net positions one clean run must leave, from the pure core."""
    book = Book(AccountingSettings())
    for r in rates:
        book.add_rate(to_rate(r))
    for e in events:
        book.add_request(to_request(e))
    out: dict[tuple[str, int, str | None, str | None], Position] = {}
    for c in book.flush():
        for e in c.entries:
            key = (e.resource_id, e.bucket_start_us // 1_000_000, e.tenant_id, e.model)
            values = (
                e.amount,
                e.completions,
                e.failed_requests,
                e.prompt_tokens,
                e.cached_prompt_tokens,
                e.completion_tokens,
            )
            old = out.get(key, (Decimal(0), 0, 0, 0, 0, 0))
            out[key] = tuple(a + b for a, b in zip(old, values, strict=True))  # type: ignore[assignment]
    return {k: v for k, v in out.items() if any(v)}


def read_topic(
    bootstrap: str, topic: str, quiet_s: float = 3, limit_s: float = 30
) -> list[dict[str, Any]]:
    """Every message of ``topic``, read with aiokafka until nothing new came for ``quiet_s``
    (bounded by ``limit_s``: a test never hangs here)."""

    async def read() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            out: list[dict[str, Any]] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limit_s
            quiet_until = loop.time() + quiet_s
            while loop.time() < min(deadline, quiet_until):
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    out.extend(json.loads(r.value) for r in records)
                    quiet_until = loop.time() + quiet_s
            return out
        finally:
            await consumer.stop()

    return asyncio.run(asyncio.wait_for(read(), limit_s + 15))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], limit_s: float = 60) -> None:
    """Wait until ``url`` answers 200 from the server ``proc`` started; fail with its stderr."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"{url} did not come up:\n{err}")
        time.sleep(0.2)


def ingest_fleet_replay(
    env: dict[str, str], tmp_path: Any, limit: int
) -> tuple[list[InferenceEvent], list[GpuRate]]:
    """The demo fleet's first ``limit`` requests in finish order and its rates, written to
    files and ingested with the CLI under ``env``; returns both for the expected ledger."""
    from services.contracts import dumps
    from services.demo.fleet import DEFAULT_FLEET, Fleet, rates, rental_window, replay

    events = sorted(
        replay(Fleet.from_dict(DEFAULT_FLEET), limit=limit), key=lambda e: e.finished_at
    )
    start, end = rental_window(events)
    fleet_rates = rates(Fleet.from_dict(DEFAULT_FLEET), start, end)
    ev_file, rate_file = tmp_path / "events.jsonl", tmp_path / "rates.jsonl"
    ev_file.write_bytes(b"\n".join(dumps(e) for e in events))
    rate_file.write_bytes(b"\n".join(dumps(r) for r in fleet_rates))
    cli(env, "ingest", "rates", str(rate_file))
    cli(env, "ingest", "events", str(ev_file))
    return events, fleet_rates
