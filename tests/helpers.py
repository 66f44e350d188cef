"""Helpers shared by integration and e2e tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import requests
from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.accounting import AccountingSettings, Book, ClosedBucket
from services.attribution.encode import to_rate, to_request
from services.contracts import GpuRate, InferenceEvent
from services.contracts.ledger import LEDGER_COUNTS


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
"""Amount, then the counts of ``LEDGER_COUNTS`` in order."""


def positions(db_url: str) -> dict[tuple[str, int, str | None, str | None], Position]:
    """The ledger's net position per (resource, bucket start in epoch seconds, tenant, model):
    amount and counts summed over every entry kind (zero positions left out)."""
    rows = query_rows(
        db_url,
        "SELECT resource_id, extract(epoch FROM bucket_start)::bigint, tenant_id, model, "
        + ", ".join(f"sum({c})" for c in ("amount", *LEDGER_COUNTS))
        + " FROM ledger_entries GROUP BY 1, 2, 3, 4",
    )
    return {(r[0], r[1], r[2], r[3]): tuple(r[4:]) for r in rows if any(r[4:])}


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
        for entry in c.entries:
            key = (
                entry.resource_id,
                entry.bucket_start_us // 1_000_000,
                entry.tenant_id,
                entry.model,
            )
            values = (entry.amount, *(getattr(entry, n) for n in LEDGER_COUNTS))
            old = out.get(key, (Decimal(0), *(0 for _ in LEDGER_COUNTS)))
            out[key] = tuple(a + b for a, b in zip(old, values, strict=True))
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
    from services.ingest.trace.fleet import Fleet, default_fleet, rates, rental_window, replay

    events = sorted(
        replay(Fleet.from_dict(default_fleet()), limit=limit), key=lambda e: e.finished_at
    )
    start, end = rental_window(events)
    fleet_rates = rates(Fleet.from_dict(default_fleet()), start, end)
    ev_file, rate_file = tmp_path / "events.jsonl", tmp_path / "rates.jsonl"
    ev_file.write_bytes(b"\n".join(dumps(e) for e in events))
    rate_file.write_bytes(b"\n".join(dumps(r) for r in fleet_rates))
    cli(env, "ingest", "rates", str(rate_file))
    cli(env, "ingest", "events", str(ev_file))
    return events, fleet_rates


# -- fault tests (tests/e2e/test_fault_*.py, bench/faults.py) ---------------------------------

FAULT_EPOCH = "2026-11-02T10:00:00+00:00"
"""Start of the seeded fault scenarios (in the past: no event is ahead of the wall clock)."""


def fault_scenario(
    seed: int,
    n_events: int = 400,
    n_resources: int = 5,
    n_tenants: int = 5,
    n_models: int = 3,
    hours: float = 2,
    spare: bool = True,
) -> tuple[list[InferenceEvent], list[GpuRate]]:
    """A seeded workload: ``n_events`` requests over ``hours`` on ``n_resources`` rated nodes
    (node-0 changes price half way), about 8 % zero-length and 20 % spanning several 60 s
    buckets, three statuses, 1 to 4 GPUs; plus, with ``spare``, a rated node with no traffic
    (all of its buckets are idle cost)."""
    import random
    from datetime import datetime, timedelta

    rng = random.Random(seed)
    t0 = datetime.fromisoformat(FAULT_EPOCH)
    span_us = int(hours * 3600 * 1_000_000)
    resources = [f"node-{i}" for i in range(n_resources)]
    tenants = [f"tenant-{i}" for i in range(n_tenants)]
    models = ["llama-3.1-70b", "llama-3.1-8b", "qwen2.5-coder-32b"][:n_models]
    rates = [
        GpuRate(
            resource_id=r,
            price_per_hour=Decimal(rng.choice(["2.50", "12.00", "36.00", "98.32"])),
            currency="USD",
            effective_from=t0,
            source="list",
        )
        for r in resources + (["node-spare"] if spare else [])
    ]
    rates.append(
        GpuRate(
            resource_id=resources[0],
            price_per_hour=Decimal("7.77"),
            currency="USD",
            effective_from=t0 + timedelta(microseconds=span_us // 2 + 123_457),
            source="spot",
        )
    )
    events = []
    for i in range(n_events):
        kind = rng.random()
        if kind < 0.08:
            dur = 0
        elif kind < 0.28:
            dur = rng.randrange(60_000_000, 300_000_000)
        else:
            dur = rng.randrange(1_000, 30_000_000)
        start = t0 + timedelta(microseconds=rng.randrange(0, span_us - dur))
        prompt = rng.randrange(0, 8000)
        status = rng.choices(["ok", "error", "cancelled"], [90, 6, 4])[0]
        events.append(
            InferenceEvent(
                event_id=f"ev-{seed}-{i}",
                tenant_id=rng.choice(tenants),
                resource_id=rng.choice(resources),
                model=rng.choice(models),
                engine="vllm",
                started_at=start,
                finished_at=start + timedelta(microseconds=dur),
                prompt_tokens=prompt,
                cached_prompt_tokens=rng.randrange(0, prompt + 1) if rng.random() < 0.3 else 0,
                completion_tokens=0 if status == "error" else rng.randrange(0, 2000),
                status=status,
                gpu_count=rng.choice([1, 1, 2, 4]),
            )
        )
    return events, rates


def publish_events(settings: Any, events: list[InferenceEvent], batch: int = 50) -> int:
    """Publish ``events`` as per-resource batches (at most ``batch`` events a message), the
    way ``inferledger ingest events`` does; returns the number of messages."""
    from services.ingest.files import batch_events
    from services.runtime.kafka import make_producer

    producer = make_producer(settings, compression_type="gzip")
    n = 0
    try:
        for resource, value, _ in batch_events(events, batch, settings.max_message_bytes):
            producer.send(settings.topic("inference-events"), key=resource, value=value)
            n += 1
        producer.flush(60)
    finally:
        producer.close(10)
    return n


def publish_rates(settings: Any, rates: list[GpuRate]) -> None:
    from services.contracts import dumps
    from services.runtime.kafka import make_producer

    producer = make_producer(settings)
    try:
        for r in rates:
            producer.send(settings.topic("gpu-rates"), key=r.resource_id, value=dumps(r))
        producer.flush(60)
    finally:
        producer.close(10)


def counted_event_ids(db_url: str) -> dict[str, int]:
    """How many times the ledger counted each event (the ``counted_events`` view)."""
    rows = query_rows(db_url, "SELECT event_id, count(*) FROM counted_events GROUP BY event_id")
    return {r[0]: int(r[1]) for r in rows}


def counting_faults(db_url: str, events: list[InferenceEvent]) -> dict[str, list[str]]:
    """Valid events never counted, events counted more than once, and unknown counted ids."""
    got = counted_event_ids(db_url)
    want = {e.event_id for e in events}
    return {
        "missing": sorted(want - set(got)),
        "twice": sorted(e for e, n in got.items() if n > 1),
        "unknown": sorted(set(got) - want),
    }


def position_diff(got: dict[Any, Any], want: dict[Any, Any], limit: int = 12) -> str:
    """The keys where two position maps differ, as lines (for assertion messages)."""
    changed = {k for k in got if k in want and got[k] != want[k]}
    keys = sorted(set(got) ^ set(want) | changed, key=str)
    lines = [f"{k}: got {got.get(k)} want {want.get(k)}" for k in keys[:limit]]
    return f"{len(keys)} positions differ:\n" + "\n".join(lines)


def start_run(env: dict[str, str], log: Any, *args: str) -> subprocess.Popen[bytes]:
    """``inferledger run ARGS`` in its own process group (so a kill reaches its children),
    stdout and stderr appended to ``log``."""
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "run", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


def kill_group(proc: subprocess.Popen[bytes], sig: int = 9, wait_s: float = 30) -> int | None:
    """Send ``sig`` to the process group of ``proc`` and wait for it (None: still running)."""
    import os

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        return proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (read from /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def vm_hwm_kb(pid: int) -> int:
    """Peak resident memory (VmHWM) of a live process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_until(pred: Any, limit_s: float, step_s: float = 0.5) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return bool(pred())


class TcpProxy:
    """A TCP proxy (threads) in front of ``target``: ``cut()`` closes every connection and
    refuses new ones (accepted, then closed at once) until ``restore()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        import threading

        self.target = target
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self.cut_flag = False
        self.refused = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut_flag:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with self._lock:
                    self._conns.discard(s)
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        self.cut_flag = True
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.cut_flag = False

    def close(self) -> None:
        self._stop = True
        self.cut()
        self._listener.close()


def explain_lost(db_url: str, events: list[InferenceEvent], lost: list[str]) -> list[str]:
    """For each lost event: its span in 60 s buckets and the buckets of the attribution state
    that hold its id. Held in none: its message was never accounted (skipped by a commit);
    held in some but not its finish bucket: replayed after a restart and taken for a duplicate
    because its first buckets had closed."""
    by_id = {e.event_id: e for e in events}
    out = []
    for eid in lost:
        e = by_id[eid]
        rows = query_rows(
            db_url,
            "SELECT key::bigint / 1000000 FROM attribution_state WHERE kind = 'bucket' "
            f"AND resource_id = '{e.resource_id}' AND data->'facts'->'events' ? '{eid}' "
            "ORDER BY 1",
        )
        start, end = int(e.started_at.timestamp()), int(e.finished_at.timestamp())
        span = list(range(start - start % 60, end - end % 60 + 1, 60))
        held = [r[0] for r in rows]
        out.append(
            f"{eid} {e.resource_id} {end - start}s buckets {len(span)} held in state "
            f"{len(held)} (finish bucket {'in' if span[-1] in held else 'NOT in'} state)"
        )
    return out


# one valid inference event as a producer writes it (JSON), for tests that vary a field
SAMPLE_EVENT: dict[str, Any] = {
    "event_id": "e1",
    "tenant_id": "acme",
    "resource_id": "node-1",
    "model": "m",
    "engine": "vllm",
    "started_at": "2024-01-01T00:00:00Z",
    "finished_at": "2024-01-01T00:00:30Z",
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "status": "ok",
}


def gateway_event(event_id: str, **over: Any) -> dict[str, Any]:
    """A valid event as the gateway tests post it, with fields replaced by ``over``."""
    e = {
        "event_id": event_id,
        "tenant_id": "acme",
        "resource_id": "node-1",
        "model": "llama-70b",
        "engine": "vllm",
        "started_at": "2024-01-01T00:00:00Z",
        "finished_at": "2024-01-01T00:00:20Z",
        "prompt_tokens": 100,
        "cached_prompt_tokens": 0,
        "completion_tokens": 10,
        "status": "ok",
    }
    e.update(over)
    return e


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``inferledger ARGS`` as a long-running process (stop it with :func:`stop_cli`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_cli(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """SIGTERM, then its whole output once it has exited."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return out


class WebhookReceiver:
    """A real HTTP receiver of alert webhooks in a thread: verifies each signature with
    ``secret``, answers ``fail_first`` requests with 500, then 200; keeps what it accepted."""

    def __init__(self, secret: bytes, fail_first: int = 0, port: int = 0) -> None:
        import http.server
        import threading

        from services.contracts import webhook

        self.secret, self.fail_first = secret, fail_first
        self.requests = 0
        self.accepted: list[dict[str, Any]] = []  # the alerts answered 2xx, as JSON
        self.bad_signatures = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = webhook.verify(
                    receiver.secret, self.headers[webhook.TIMESTAMP_HEADER] or "", body,
                    self.headers[webhook.SIGNATURE_HEADER] or "",
                )  # fmt: skip
                receiver.requests += 1
                if not ok:
                    receiver.bad_signatures += 1
                    status = 401
                elif receiver.requests <= receiver.fail_first:
                    status = 500
                else:
                    status = 200
                    receiver.accepted.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def children(pid: int, word: str) -> list[int]:
    """Child processes of ``pid`` whose command line holds ``word`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and word in cmdline:
            found.append(int(entry.name))
    return found


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    """``pred()`` once it is truthy (polled every 0.2 s), or an AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {timeout:.0f} s")


# -- database roles (tests/integration/test_roles.py, tests/e2e/test_roles_cli.py) -----------


def connect_as(
    db_url: str, role: str | None = None, password: str | None = None
) -> psycopg.Connection[Any]:
    """A psycopg connection (autocommit) to the test database as ``role`` (default: the URL's
    user), the way a client connects (the URL's host: TCP, or a socket in ?host=)."""
    url = make_url(db_url)
    conninfo = url.set(drivername="postgresql").render_as_string(False)  # host in ?host= too
    if role is None:
        return psycopg.connect(conninfo, autocommit=True)
    return psycopg.connect(conninfo, user=role, password=password or "", autocommit=True)


class Logins:
    """Login roles unique to this test run (the server is shared), dropped at teardown."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.prefix = f"il_{uuid.uuid4().hex[:8]}_"
        self.made: list[str] = []
        self.passwords: dict[str, str] = {}
        self.conns: list[psycopg.Connection[Any]] = []

    def name(self, suffix: str) -> str:
        """A role name unique to this run, dropped at teardown whoever creates the role."""
        role = self.prefix + suffix
        self.made.append(role)
        return role

    def make(self, kind: Any, suffix: str, tenant: str | None = None) -> str:
        """A login of ``kind`` made with services.ledger.roles (the CLI's SQL), with a password."""
        from services.ledger.roles import grant

        role = self.name(suffix)
        self.passwords[role] = secrets.token_urlsafe(12)
        engine = create_engine(self.db_url)
        try:
            grant(engine, kind, role, tenant, self.passwords[role])
        finally:
            engine.dispose()
        return role

    def connect(self, role: str) -> psycopg.Connection[Any]:
        conn = connect_as(self.db_url, role, self.passwords.get(role))
        self.conns.append(conn)
        return conn

    def url(self, role: str) -> str:
        return (
            make_url(self.db_url)
            .set(username=role, password=self.passwords[role])
            .render_as_string(False)
        )

    def close(self, admin_url: str) -> None:
        from services.runtime.stack import admin_connect

        for conn in self.conns:
            conn.close()
        with admin_connect(admin_url) as admin:
            # a closed session's temporary objects (owned by its role) go when its backend exits
            for _ in range(100):
                left = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY(%s)", (self.made,)
                ).fetchone()
                if not left or not left[0]:
                    break
                time.sleep(0.1)
            for role in self.made:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
