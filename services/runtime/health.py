"""What a processor's dependencies look like right now, for ``/healthz`` and the logs.

A processor never crash-loops on an outage of Postgres or the broker: it retries with
exponential backoff (:func:`retry_sync`, :func:`retry_async`) and, while it does, reports the
dependency as unhealthy here. A supervisor or a load balancer reads ``/healthz`` (503 while
anything is down); the log says what failed, how often, and when it recovered.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from services.runtime import logs

log = logs.get(__name__)
T = TypeVar("T")

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 15.0


def describe(error: BaseException) -> str:
    """``Type: first line of the message``, the type named once (some messages start with it)."""
    name = type(error).__name__
    text = str(error).splitlines()[0] if str(error) else ""
    return text if text.startswith(name) else f"{name}: {text}"


class Health:
    """Dependencies that are failing now, with their latest error (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[str, float, int]] = {}  # dep -> (error, since, attempts)
        # dependency -> a check that raises when it is unreachable: an idle processor has no
        # failed attempt to report, so /healthz asks the dependency itself
        self._probes: dict[str, Callable[[], None]] = {}

    def add_probe(self, dependency: str, probe: Callable[[], None]) -> None:
        self._probes[dependency] = probe

    def failed(self, dependency: str, error: BaseException) -> int:
        """Record a failed attempt; returns how many in a row."""
        with self._lock:
            _, since, attempts = self._failing.get(dependency, ("", time.time(), 0))
            self._failing[dependency] = (describe(error)[:300], since, attempts + 1)
            return attempts + 1

    def check(self, dependency: str) -> bool:
        """Ask ``dependency`` now through its probe and record the answer: True when it
        answered (a failure recorded before is cleared), False when not (recorded)."""
        try:
            self._probes[dependency]()
        except Exception as exc:  # whatever it raises, it is not reachable
            self.failed(dependency, exc)
            return False
        self.recovered(dependency)
        return True

    def recovered(self, dependency: str) -> None:
        with self._lock:
            gone = self._failing.pop(dependency, None)
        if gone is not None:
            log.warning(
                "dependency recovered",
                dependency=dependency,
                down_seconds=round(time.time() - gone[1], 1),
                attempts=gone[2],
            )

    @property
    def healthy(self) -> bool:
        with self._lock:
            return not self._failing

    def status(self, probe: bool = False) -> dict[str, Any]:
        """What is failing now; with ``probe``, also each dependency asked directly."""
        with self._lock:
            failing = {
                d: {"error": e, "since": since, "attempts": n}
                for d, (e, since, n) in self._failing.items()
            }
        if probe:
            for dependency, check in list(self._probes.items()):
                if dependency in failing:
                    continue
                try:
                    check()
                except Exception as exc:  # whatever it raises, it is not reachable
                    failing[dependency] = {"error": describe(exc)[:300]}
        return {"status": "unhealthy" if failing else "ok", "failing": failing}


def postgres_probe(url: str, timeout_seconds: int = 2) -> Callable[[], None]:
    """A check that connects to the database at ``url`` (SQLAlchemy form) and runs SELECT 1."""
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def check() -> None:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=timeout_seconds) as conn:
            conn.execute("SELECT 1")

    return check


def kafka_probe(
    bootstrap: str | None, security: dict[str, Any] | None = None, timeout_seconds: float = 2.0
) -> Callable[[], None]:
    """A check that connects to the broker and fetches the cluster's metadata (the list of
    topics), within about ``timeout_seconds``. A producer's cached metadata says nothing about
    whether the broker is still there; this asks it."""

    def check() -> None:
        from kafka import KafkaConsumer

        if not bootstrap:
            raise ConnectionError("no broker configured")
        timeout_ms = int(timeout_seconds * 1000)
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="inferledger-health",
            enable_auto_commit=False,
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            **(security or {}),
        )
        try:
            consumer.topics()
        finally:
            consumer.close(autocommit=False, timeout_ms=timeout_ms)

    return check


HEALTH = Health()  # one per process: the processes are separate (``run all`` spawns them)


def _failed(health: Health, dependency: str, exc: BaseException) -> float:
    """Record and log a failed attempt; returns how long to wait before the next one."""
    attempt = health.failed(dependency, exc)
    delay = float(min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1)))
    log.warning(
        "dependency unavailable; retrying",
        dependency=dependency,
        attempt=attempt,
        retry_in=delay,
        error=describe(exc),
    )
    return delay


def retry_sync(
    dependency: str,
    fn: Callable[[], T],
    retry_on: tuple[type[BaseException], ...],
    health: Health = HEALTH,
) -> T:
    """Call ``fn`` until it succeeds, sleeping with exponential backoff after each failure of
    a kind in ``retry_on`` (an outage); any other exception propagates (a bug: crash loudly)."""
    attempt = 0
    while True:
        try:
            result = fn()
        except retry_on as exc:
            attempt += 1
            time.sleep(_failed(health, dependency, exc))
            continue
        if attempt:
            health.recovered(dependency)
        return result


async def retry_async(
    dependency: str,
    fn: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...],
    health: Health = HEALTH,
) -> T:
    """:func:`retry_sync` for coroutines (the event loop goes on while it waits)."""
    attempt = 0
    while True:
        try:
            result = await fn()
        except retry_on as exc:
            attempt += 1
            await asyncio.sleep(_failed(health, dependency, exc))
            continue
        if attempt:
            health.recovered(dependency)
        return result


def postgres_errors() -> tuple[type[BaseException], ...]:
    """What an outage of Postgres raises (connection refused, reset, server shut down)."""
    import psycopg
    from sqlalchemy import exc as sa_exc

    return (sa_exc.OperationalError, sa_exc.InterfaceError, psycopg.OperationalError, OSError)


def kafka_errors() -> tuple[type[BaseException], ...]:
    """What an outage of the broker raises to a producer (aiokafka and kafka-python)."""
    from aiokafka import errors as aiokafka_errors
    from kafka import errors as kafka_python_errors

    return (
        aiokafka_errors.KafkaError,
        kafka_python_errors.KafkaError,
        asyncio.TimeoutError,
        OSError,
    )
