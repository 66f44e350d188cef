"""Which events partitions a passed-on heartbeat marker speaks for.

A streaming attribution worker that has closed through a heartbeat (see ``EndOfInput``) passes
the marker on to every cost-allocations partition under an id that names the run and the
events partitions the worker owns: ``<run id>.<first partition>.<hex bitmap>``, one id per 256
partitions (an id stays under the 128 characters ``Id`` allows). Whoever waits for the run
(``run all --until-idle`` beside running processors) is done once, on every cost-allocations
partition, the stored markers of the run together cover every events partition, whatever the
number of workers.
"""

from __future__ import annotations

from collections.abc import Iterable

CHUNK = 256
MAX_RUN_ID = 128 - len(".65535.") - CHUNK // 4
"""The longest run id a heartbeat may carry: its passed-on ids (``.<first>.<bitmap>``, up to
65,536 partitions) must stay valid ``Id`` values. Longer ones are ignored, not passed on."""


def heartbeat_ids(run_id: str, partitions: Iterable[int]) -> list[str]:
    """The ids a worker owning ``partitions`` passes ``run_id``'s heartbeat on under."""
    chunks: dict[int, int] = {}
    for p in partitions:
        base = p - p % CHUNK
        chunks[base] = chunks.get(base, 0) | 1 << (p - base)
    return [f"{run_id}.{base}.{bits:x}" for base, bits in sorted(chunks.items())]


def heartbeat_coverage(marker_id: str, run_id: str) -> set[int]:
    """The events partitions a passed-on marker of ``run_id`` covers (none: another run's)."""
    prefix = f"{run_id}."
    if not marker_id.startswith(prefix):
        return set()
    try:
        base_s, bits_s = marker_id[len(prefix) :].split(".")
        base, bits = int(base_s), int(bits_s, 16)
    except ValueError:
        return set()
    return {base + i for i in range(bits.bit_length()) if bits >> i & 1}
