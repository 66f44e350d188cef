"""Which event ids a Book has accepted, wherever their buckets lie: a compact hash index.

One slot is two signed 64-bit integers in flat arrays (16 bytes, no Python object per entry):

- the key, ``hash(event_id)`` (0 is an empty slot). Python's string hash is salted per process,
  so keys are never stored: the index is rebuilt from the event ids of closed buckets when they
  are restored or loaded (:meth:`services.accounting.book.Book.remember`);
- the value, ``last_bucket * 2**32 + digest``: the bucket index (``end_us // W``) of the bucket
  that holds the first copy's finish, used to expire the entry, and a CRC-32 of the first
  copy's content (:func:`content_digest`, deterministic, so closed buckets store it and a
  restarted process still tells an identical copy from a conflicting one). Digest 0 means
  "content unknown" (a bucket stored before digests were).

Linear probing, at most 2/3 full (about 20 bytes an id: 5,000,000 ids take 134 MB, 201 MB while
growing); growing rebuilds the table and drops the entries whose last
bucket is before :attr:`SeenIndex.expire_before` (behind the late horizon: see ``Book``).
Deleting (``discard``) keeps the key and marks the value, so probe chains stay intact.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from typing import Any

from services.accounting.model import Request

DELETED = -(2**63)
_LOW = 0xFFFFFFFF
_MAX_BUCKET = 2**31 - 1


def event_key(event_id: str) -> int:
    """The index key of an event id (this process only): its hash, never 0."""
    return hash(event_id) or 1


_INTS = struct.Struct("<6q").pack


def content_digest(req: Request, _crc: Any = zlib.crc32, _ints: Any = _INTS) -> int:
    """CRC-32 of everything of a request but its id (1..2**32-1; 0 means unknown): tenant,
    model, resource and status (UTF-8, NUL-separated), then the times, token counts and GPUs
    as six little-endian signed 64-bit integers (decimal text if one does not fit), then, when
    the event has one, the time of its first token (decimal text: an event without one digests
    as it always did)."""
    _, t, m, r, s, e, p, c, co, st, g, ft = req
    head = _crc(f"{t}\x00{m}\x00{r}\x00{st}".encode())
    try:
        d: int = _crc(_ints(s, e, p, c, co, g), head)
    except struct.error:
        d = _crc(f"{s} {e} {p} {c} {co} {g}".encode(), head)
    if ft is not None:
        d = _crc(f" first {ft}".encode(), d)
    return d or 1


def pack(last_bucket: int, digest: int) -> int:
    """The value of an entry (the bucket index is clamped to 32 signed bits)."""
    if last_bucket > _MAX_BUCKET:
        last_bucket = _MAX_BUCKET
    elif last_bucket < -_MAX_BUCKET:
        last_bucket = -_MAX_BUCKET
    return (last_bucket << 32) | digest


def last_bucket(value: int) -> int:
    return value >> 32


def digest_of(value: int) -> int:
    return value & _LOW


class SeenIndex:
    """``key -> value`` for accepted event ids, in two ``array('q')`` (16 bytes a slot)."""

    __slots__ = ("_keys", "_limit", "_mask", "_used", "_vals", "expire_before")

    def __init__(self, capacity: int = 1 << 16) -> None:
        size = 8
        while size < capacity:
            size *= 2
        self._alloc(size)
        self.expire_before: int | None = None
        """Bucket index: entries whose last bucket is before it are dropped when rebuilt."""

    def _alloc(self, size: int) -> None:
        self._keys = array("q", bytes(8 * size))
        self._vals = array("q", bytes(8 * size))
        self._mask = size - 1
        self._limit = size * 2 // 3
        self._used = 0  # slots holding a key (deleted ones included)

    def __len__(self) -> int:
        return sum(1 for k, v in zip(self._keys, self._vals, strict=True) if k and v != DELETED)

    @property
    def capacity(self) -> int:
        return self._mask + 1

    def find(self, key: int) -> int:
        """The slot of ``key``, or the empty slot where it would go (see :meth:`insert_at`)."""
        keys, mask = self._keys, self._mask
        i = key & mask
        while True:
            k = keys[i]
            if k == key or not k:
                return i
            i = (i + 1) & mask

    def insert_at(self, slot: int, key: int, value: int) -> None:
        """Insert ``key`` at the empty ``slot`` :meth:`find` gave (nothing inserted since)."""
        self._keys[slot] = key
        self._vals[slot] = value
        self._used += 1
        if self._used > self._limit:
            self.rebuild()

    def digests(self, event_ids: list[str]) -> list[int]:
        """The content digest of each of ``event_ids`` (0 when not indexed)."""
        keys, vals, mask = self._keys, self._vals, self._mask
        out = []
        for event_id in event_ids:
            key = hash(event_id) or 1
            i = key & mask
            d = 0
            while True:
                k = keys[i]
                if k == key:
                    v = vals[i]
                    if v != DELETED:
                        d = v & _LOW
                    break
                if not k:
                    break
                i = (i + 1) & mask
            out.append(d)
        return out

    def get(self, key: int) -> int | None:
        keys, mask = self._keys, self._mask
        i = key & mask
        while True:
            k = keys[i]
            if k == key:
                v = self._vals[i]
                return None if v == DELETED else v
            if not k:
                return None
            i = (i + 1) & mask

    def put(self, key: int, value: int) -> None:
        """Set the value of ``key`` (inserting it when absent)."""
        keys, mask = self._keys, self._mask
        i = key & mask
        while True:
            k = keys[i]
            if k == key:
                self._vals[i] = value
                return
            if not k:
                break
            i = (i + 1) & mask
        keys[i] = key
        self._vals[i] = value
        self._used += 1
        if self._used > self._limit:
            self.rebuild()

    def discard(self, key: int) -> None:
        keys, mask = self._keys, self._mask
        i = key & mask
        while True:
            k = keys[i]
            if k == key:
                self._vals[i] = DELETED
                return
            if not k:
                return
            i = (i + 1) & mask

    def rebuild(self) -> None:
        """Copy the live entries (not deleted, not expired) into a table at most half full
        (the peak is both tables, never a Python object per entry)."""
        expire = -_MAX_BUCKET if self.expire_before is None else self.expire_before
        expire = max(expire, -_MAX_BUCKET)  # so that DELETED is always below
        old_keys, old_vals = self._keys, self._vals
        low = expire << 32  # v >> 32 >= expire, without a shift per entry
        n = sum(1 for k, v in zip(old_keys, old_vals, strict=True) if k and v >= low)
        size = 8
        while size < 2 * n:
            size *= 2
        self._alloc(size)
        keys, vals, mask = self._keys, self._vals, self._mask
        for k, v in zip(old_keys, old_vals, strict=True):
            if k and v >= low:
                i = k & mask
                while keys[i]:
                    i = (i + 1) & mask
                keys[i] = k
                vals[i] = v
        self._used = n

    def key_at(self, slot: int) -> int:
        return self._keys[slot]

    def value_at(self, slot: int) -> int:
        return self._vals[slot]
