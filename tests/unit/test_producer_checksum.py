"""kafka-python checksums every record batch it produces (CRC32C); in pure Python that cost the
streaming load generator more CPU than the rest of its work, and the emitter pays it too."""

from __future__ import annotations

from kafka.record import util
from kafka.record._crc32c import crc as pure_python_crc32c


def test_kafka_python_checksums_record_batches_in_c() -> None:
    # the `crc32c` dependency is what kafka-python picks up (a private name: no public one)
    assert util._crc32c is not pure_python_crc32c
    assert util.calc_crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
