"""Health: a dependency's probe asked on demand, its answer recorded (failed, then recovered)."""

from __future__ import annotations

import time

import pytest

from services.runtime.health import Health, kafka_probe
from services.runtime.stack import free_port


def test_check_records_a_failure_and_clears_it_when_the_dependency_answers_again():
    up = [True]

    def probe() -> None:
        if not up[0]:
            raise ConnectionRefusedError("gone")

    health = Health()
    health.add_probe("kafka", probe)
    assert health.check("kafka") and health.healthy
    up[0] = False
    assert not health.check("kafka") and not health.check("kafka")
    failing = health.status()["failing"]["kafka"]
    assert failing["attempts"] == 2 and "ConnectionRefusedError: gone" in failing["error"]
    up[0] = True
    assert health.check("kafka") and health.status() == {"status": "ok", "failing": {}}


def test_the_kafka_probe_fails_fast_without_a_broker():
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 (whatever kafka-python raises)
        kafka_probe(f"127.0.0.1:{free_port()}", timeout_seconds=1)()
    assert time.monotonic() - started < 5
    with pytest.raises(ConnectionError):
        kafka_probe(None)()


def test_an_error_is_described_with_its_type_named_once():
    from services.runtime.health import describe

    class KafkaTimeoutError(Exception):
        pass

    assert describe(KafkaTimeoutError("KafkaTimeoutError: Unable to bootstrap")) == (
        "KafkaTimeoutError: Unable to bootstrap"
    )
    assert describe(OSError("refused\nmore")) == "OSError: refused"
    assert describe(ValueError()) == "ValueError: "
