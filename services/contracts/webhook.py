"""The webhook wire format of budget alerts (DESIGN.md section 2), standard library only.

A delivery is a ``POST`` of the alert's JSON with::

    Content-Type: application/json
    X-Inferledger-Timestamp: <unix seconds>
    X-Inferledger-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

The secret is the budget's own, else ``INFERLEDGER_WEBHOOK_SECRET``. A receiver recomputes the
signature over the raw body it received (not a re-serialization of the parsed JSON), compares it
in constant time (:func:`verify`), and refuses timestamps too far from its clock (a replayed
old delivery).
"""

from __future__ import annotations

import hashlib
import hmac
import time

CONTENT_TYPE = "application/json"
TIMESTAMP_HEADER = "X-Inferledger-Timestamp"
SIGNATURE_HEADER = "X-Inferledger-Signature"
SCHEME = "sha256="
DEFAULT_TOLERANCE_SECONDS = 300
"""How far from the receiver's clock :func:`verify` accepts a timestamp by default."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``secret`` over ``b"<timestamp>." + body``."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return SCHEME + hmac.new(secret, message, hashlib.sha256).hexdigest()


def headers(secret: bytes, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers of one delivery of ``body`` (signed now unless ``timestamp`` is given)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "Content-Type": CONTENT_TYPE,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(secret, ts, body),
    }


def verify(
    secret: bytes,
    timestamp: int | str,
    body: bytes,
    signature: str,
    *,
    tolerance_seconds: float | None = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``signature`` (the header's value) signs ``body`` at ``timestamp`` with
    ``secret``, compared in constant time; and, unless ``tolerance_seconds`` is None, whether
    the timestamp lies within that many seconds of ``now`` (default: this clock). Malformed
    input is False, never an exception."""
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    if tolerance_seconds is not None:
        clock = time.time() if now is None else now
        if abs(clock - ts) > tolerance_seconds:
            return False
    if not isinstance(signature, str):
        return False
    expected = sign(secret, ts, body)
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("utf-8"))
