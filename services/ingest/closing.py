"""Closing a kafka-python producer within a bounded time, broker or not.

kafka-python's ``KafkaProducer.close(timeout)`` flushes first and raises ``KafkaTimeoutError``
when the flush times out, before it ever force-closes: during a broker outage a process that
closes its producer either waits without bound or ends in a traceback, and its sender thread
goes on retrying. :func:`close_producer` gives up after the timeout instead: what is pending
is aborted (each record's future fails) and the caller is told, so it can say what was lost.
"""

from __future__ import annotations

from kafka import KafkaProducer
from kafka.errors import KafkaError

_ABORT_SECONDS = 2.0  # for the sender thread to fail what is pending once told to stop


def close_producer(producer: KafkaProducer, timeout: float) -> bool:
    """Flush within ``timeout`` seconds and close; False when something pending was not
    acknowledged in time (it was aborted: its futures failed)."""
    try:
        producer.flush(timeout)
        delivered = True
    except KafkaError:  # KafkaTimeoutError: the broker did not acknowledge everything in time
        delivered = False
        sender = getattr(producer, "_sender", None)  # no public force-close in kafka-python
        if sender is not None:
            sender.force_close()
            sender.join(_ABORT_SECONDS)
    try:
        producer.close(0)
    except KafkaError:  # still pending after the abort: nothing more to wait for
        delivered = False
    return delivered
