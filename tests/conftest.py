"""Real services for the tests, found in this order (DESIGN.md section 6):
``INFERLEDGER_KAFKA_BOOTSTRAP`` / ``INFERLEDGER_DATABASE_URL`` if set; else testcontainers where a
Docker engine answers; else the embedded Tansu broker and the local or embedded Postgres.
A service that cannot be had is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from services.runtime.config import Settings
from services.runtime.stack import (
    EmbeddedBroker,
    admin_connect,
    embedded_postgres_url,
    postgres_answers,
)
from tests.helpers import Logins

ROOT = Path(__file__).resolve().parents[1]


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("INFERLEDGER_KAFKA_BOOTSTRAP"):
        yield os.environ["INFERLEDGER_KAFKA_BOOTSTRAP"]
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    broker = EmbeddedBroker().start(
        ROOT / ".embedded" / "test-broker.log" if (ROOT / ".embedded").is_dir() else None
    )
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A URL of the server's maintenance database; each test gets its own database."""
    if os.environ.get("INFERLEDGER_DATABASE_URL"):
        yield os.environ["INFERLEDGER_DATABASE_URL"]
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16.4", driver="psycopg") as pg:
            yield pg.get_connection_url()
        return
    if postgres_answers():
        yield "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        return
    yield embedded_postgres_url(ROOT / ".embedded")


@pytest.fixture
def empty_db_url(postgres_admin_url: str) -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    name = f"il_test_{uuid.uuid4().hex[:12]}"
    with admin_connect(postgres_admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_admin_url).set(database=name).render_as_string(False)
    try:
        yield url
    finally:
        with contextlib.suppress(psycopg.Error), admin_connect(postgres_admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """A database migrated with ``alembic upgrade head``."""
    from services.ledger.db import migrate

    migrate(empty_db_url)
    return empty_db_url


@pytest.fixture
def logins(db_url: str, postgres_admin_url: str) -> Iterator[Logins]:
    """Login roles for the test database, unique to this run (roles are server-wide) and
    dropped afterwards."""
    made = Logins(db_url)
    try:
        yield made
    finally:
        made.close(postgres_admin_url)


@pytest.fixture
def settings(kafka_bootstrap: str, db_url: str) -> Settings:
    """Settings on the real services, with topics of this test only."""
    from services.runtime.kafka import ensure_topics

    s = Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=db_url,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=4,
    )
    ensure_topics(s)
    return s


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """The environment a user would set to point the CLI at these services."""
    env = dict(os.environ)
    env.update(
        {
            "INFERLEDGER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
            "INFERLEDGER_DATABASE_URL": settings.database_url or "",
            "INFERLEDGER_TOPIC_PREFIX": settings.topic_prefix,
            "INFERLEDGER_LOG_FORMAT": "json",
        }
    )
    return env
