"""A value Postgres refuses never stops the ledger writer: the batch is written message by
message, the refused message goes to its dead-letter topic with Postgres's error, the others
are written, and `run --until-idle` still ends."""

from __future__ import annotations

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
