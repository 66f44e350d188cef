"""A value Postgres refuses never stops the ledger writer: the batch is written message by
message, the refused message goes to its dead-letter topic with Postgres's error, the others
are written, and `run --until-idle` still ends."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

from kafka import KafkaProducer
from sqlalchemy import create_engine, text

from services.contracts import CostAllocation, LedgerEntry, dumps
from tests.helpers import cli, query_rows, read_topic

REFUSE = """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.entry_id LIKE 'poison%' THEN
    RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


def allocation(entry_id: str, minute: int) -> bytes:
    start = datetime(2024, 1, 1, 0, minute, tzinfo=UTC)
    entry = LedgerEntry(
        entry_id=entry_id,
        entry_kind="idle",
        cost_basis="provisional",
        resource_id="node-1",
        bucket_start=start,
        bucket_seconds=60,
        amount=Decimal("0.6"),
        currency="USD",
    )
    return dumps(
        CostAllocation(resource_id="node-1", bucket_start=start, bucket_seconds=60, entries=[entry])
    )


def test_a_message_postgres_refuses_is_dead_lettered_and_the_rest_written(settings, cli_env):
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text(REFUSE))
    engine.dispose()
    topic = settings.topic("cost-allocations")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for value in (
        allocation("good-entry-0000001", 0),
        allocation("poison-entry-00001", 1),
        allocation("good-entry-0000002", 2),
    ):
        producer.send(topic, key=b"node-1", value=value, partition=0)  # one batch, in order
    producer.flush()
    producer.close()

    cli(cli_env, "run", "all", "--until-idle")

    rows = query_rows(settings.database_url, "SELECT entry_id FROM ledger_entries ORDER BY 1")
    assert [r[0] for r in rows] == ["good-entry-0000001", "good-entry-0000002"]
    dlq = read_topic(settings.kafka_bootstrap, f"{topic}.dlq")
    assert [d["reason"] for d in dlq] == ["rejected_by_database"]
    assert "refused by a test trigger" in dlq[0]["detail"]
    assert "poison-entry-00001" in dlq[0]["payload"]


def test_an_agent_that_fails_takes_its_process_down_with_a_non_zero_exit(settings, cli_env):
    """Not an outage and not a refused value (a bug, say): faust would log it and leave a
    process that looks alive and writes nothing; it must exit non-zero for its supervisor."""
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                REFUSE.replace("check_violation", "feature_not_supported").replace(
                    "refused by a test trigger", "a bug"
                )
            )
        )
    engine.dispose()
    topic = settings.topic("cost-allocations")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    producer.send(topic, key=b"node-1", value=allocation("poison-entry-00001", 1))
    producer.flush()
    producer.close()
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "run", "ledger"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "agent failed; stopping the process" in proc.stdout + proc.stderr
