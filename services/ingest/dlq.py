"""Dead letters: read ``<topic>.dlq``, show them, and send fixed messages back.

Every component writes the same record, a :class:`services.contracts.DeadLetter` (built by
:func:`services.runtime.kafka.dead_letter`): reason, detail, source, original topic, partition
and offset, and the payload (truncated above ``INFERLEDGER_DLQ_PAYLOAD_LIMIT``). ``inferledger
dlq list`` reads them from the start of the dead-letter topics to their current end, decodes and
validates each, and shows them oldest first; ``inferledger dlq replay`` sends payloads back to the
topic they were rejected from, either as they are (after the cause was fixed elsewhere, e.g. a
token's scope) or fixed by hand in a JSONL file. A replayed payload is validated first: what is
still invalid is reported and not sent, and a truncated payload is never sent.

A replay never bypasses the gateway's authorization. A dead letter the gateway wrote names the
credential that sent it (``credential_id``); its payload goes back only if that token is still
configured (``INFERLEDGER_GATEWAY_TOKENS`` of the replaying process) and may still write every
resource and tenant in it, as if the token had sent it again now. A gateway dead letter with no
credential (an unauthenticated request, as older versions dead-lettered them) is refused as
``unauthenticated``, one whose token is gone as ``unknown_credential``, one still out of the
token's scope as ``forbidden``. An operator may override that for dead letters named one by one
(``--record TOPIC:PARTITION:OFFSET --include-unauthorized``); nothing else lifts it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from services.contracts import DeadLetter as Letter
from services.contracts import DecodeError, EndOfInput, decode_dead_letter, encode_dead_letter
from services.contracts.wire import decode_allocation, decode_billing, decode_events, decode_rate
from services.runtime.config import ALLOCATIONS, BILLING, EVENTS, RATES, Settings
from services.runtime.kafka import make_producer, read_records

if TYPE_CHECKING:
    from services.ingest.gateway import Credentials

TOPICS = (EVENTS, RATES, BILLING, ALLOCATIONS)
RECORD_TYPE: str = Letter.model_fields["type"].default


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic, where it is, and what it says."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    record: dict[str, Any]
    """The dead letter as its JSON object (:class:`~services.contracts.DeadLetter`'s fields),
    or, for a record that is not a dead letter, ``unreadable_dead_letter`` with its bytes."""
    rejected_at: datetime | None = None
    """When it was rejected (None: an unreadable record)."""

    @property
    def reason(self) -> str:
        return str(self.record.get("reason", "unknown"))

    @property
    def source(self) -> str:
        return str(self.record.get("source", "unknown"))

    @property
    def topic(self) -> str:
        """The topic the payload was rejected from (where a replay sends it)."""
        return str(self.record.get("topic") or self.dlq_topic.removesuffix(".dlq"))

    @property
    def truncated(self) -> bool:
        return bool(self.record.get("payload_truncated"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "dlq_topic": self.dlq_topic,
            "dlq_partition": self.dlq_partition,
            "dlq_offset": self.dlq_offset,
            **self.record,
        }

    def order(self) -> tuple[bool, datetime, str, int, int]:
        """Oldest first (by ``rejected_at``), then by where it is; unreadable records last."""
        at = self.rejected_at
        return (at is None, at or _NEVER, self.dlq_topic, self.dlq_partition, self.dlq_offset)


_NEVER = datetime.max.replace(tzinfo=UTC)


def dlq_topics(settings: Settings, topics: Iterable[str] | None = None) -> list[str]:
    """The dead-letter topics of the given topics (base names, e.g. ``inference-events``)."""
    return [f"{settings.topic(t)}.dlq" for t in (topics or TOPICS)]


def read(settings: Settings, topics: list[str], timeout_s: float = 30) -> Iterator[DeadLetter]:
    """Every record of ``topics`` from the beginning to their end (as the fetch responses'
    high watermarks say: some brokers' ListOffsets answers lag behind), oldest first: by
    ``rejected_at``, then dead-letter topic, partition and offset."""
    letters = [
        letter(topic, partition, offset, value)
        for topic, partition, offset, _, value in read_records(
            settings, topics, timeout_s, client_id="inferledger-dlq"
        )
    ]
    letters.sort(key=DeadLetter.order)
    return iter(letters)


def letter(topic: str, partition: int, offset: int, value: bytes | None) -> DeadLetter:
    """A record of a dead-letter topic, decoded and validated as a dead letter; one that is not
    (a tombstone, bytes someone else wrote) is listed as ``unreadable_dead_letter``."""
    try:
        decoded = decode_dead_letter(value)
    except DecodeError as exc:
        text = (value or b"").decode("utf-8", errors="backslashreplace")
        record = {
            "type": RECORD_TYPE,
            "reason": "unreadable_dead_letter",
            "detail": f"{exc.reason}: {exc.detail}"[:2000],
            "payload": text,
        }
        return DeadLetter(topic, partition, offset, record)
    return DeadLetter(topic, partition, offset, record_of(decoded), decoded.rejected_at)


def record_of(letter: Letter) -> dict[str, Any]:
    """A dead letter as the JSON object it is on the wire."""
    data: dict[str, Any] = json.loads(encode_dead_letter(letter))
    return data


Position = tuple[str, int, int]  # dead-letter topic, partition, offset


def parse_position(settings: Settings, spec: str) -> Position:
    """``TOPIC:PARTITION:OFFSET`` of one dead letter, as ``dlq list --format jsonl`` shows it
    (``dlq_topic``, ``dlq_partition``, ``dlq_offset``); TOPIC may be the dead-letter topic or
    the topic it serves, with or without the topic prefix (``inference-events:0:12``)."""
    try:
        topic, partition, offset = spec.rsplit(":", 2)
        where = (topic, int(partition), int(offset))
    except ValueError:
        raise ValueError(f"{spec!r} is not TOPIC:PARTITION:OFFSET") from None
    name = where[0].removeprefix(settings.topic_prefix).removesuffix(".dlq")
    return f"{settings.topic(name)}.dlq", where[1], where[2]


def matches(
    d: DeadLetter, reason: str | None, source: str | None, topic: str | None = None
) -> bool:
    return (
        (reason is None or d.reason == reason)
        and (source is None or d.source == source)
        and (topic is None or d.topic == topic)
    )


# -- replay -------------------------------------------------------------------------------------
Subjects = list[tuple[str | None, str | None]]  # (resource_id, tenant_id) of each message inside


@dataclass(frozen=True)
class Candidate:
    """One message a replay may send: where it comes from, where it goes, why not (if known)."""

    where: str
    topic: str
    raw: bytes | None
    skip: str = ""
    record: dict[str, Any] | None = None  # the dead-letter record (None: a plain message)
    override: bool = False  # named by the operator with --include-unauthorized


def _key_and_check(
    settings: Settings, topic: str
) -> Callable[[bytes], tuple[str | None, str, Subjects]]:
    """For a target topic: (message key, "" when valid else why not, the resource and tenant
    of each message inside) of a payload."""
    base = topic.removeprefix(settings.topic_prefix)

    def check(raw: bytes) -> tuple[str | None, str, Subjects]:
        try:
            if base == EVENTS:
                decoded = decode_events(raw)
                if decoded.rejected:
                    why = "; ".join(f"{r.reason}: {r.detail}" for r in decoded.rejected[:3])
                    return None, why, []
                if not decoded.events:
                    return None, "no events in the payload", []
                subjects: Subjects = [(e.resource_id, e.tenant_id) for e in decoded.events]
                return decoded.events[0].resource_id, "", subjects
            decode = {RATES: decode_rate, BILLING: decode_billing, ALLOCATIONS: decode_allocation}
            if base not in decode:
                return None, f"unknown topic {topic}", []
            msg = decode[base](raw)
            if isinstance(msg, EndOfInput):
                return None, "an end-of-input marker is never replayed", []
            resource = getattr(msg, "resource_id", None)
            return resource, "", [(resource, None)]
        except DecodeError as exc:
            return None, f"{exc.reason}: {exc.detail}", []

    return check


UNAUTHENTICATED = frozenset({"missing_token", "invalid_token"})


def authorize(record: dict[str, Any] | None, subjects: Subjects, credentials: Credentials) -> str:
    """ "" when the gateway would accept these messages now from the credential that sent them,
    else ``reason: detail``. Only dead letters the gateway wrote are checked: other components
    (file ingest, processors, the proxy's emitter) write what was already authenticated."""
    if record is None or record.get("source") != "gateway":
        return ""
    cid = record.get("credential_id")
    if record.get("reason") in UNAUTHENTICATED or not isinstance(cid, str) or not cid:
        return "unauthenticated: the gateway refused it without a valid token"
    grant = credentials.by_id(cid)
    if grant is None:
        name = record.get("credential")
        return f"unknown_credential: token {name!r} ({cid}) is no longer a gateway token"
    for resource, tenant in subjects:
        denied = grant.forbids(resource, tenant)
        if denied:
            return f"forbidden: {denied}"
    return ""


@dataclass
class ReplayResult:
    sent: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    by_topic: Counter[str] = field(default_factory=Counter)
    overridden: int = 0  # sent although the gateway's authorization refuses them now

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "sent_unauthorized": self.overridden,
            "by_topic": dict(self.by_topic),
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(self.skipped),
            "problems": self.problems[:50],
        }


def payload_bytes(payload: Any) -> bytes:
    """A DLQ record's payload as the bytes to send (a string as is, JSON otherwise)."""
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":")).encode()


def from_file(
    stream: IO[bytes], settings: Settings, default_topic: str | None
) -> Iterator[Candidate]:
    """A candidate per line of a fixed-messages JSONL file.

    A line is either a dead-letter record (as ``dlq list --format jsonl`` prints it) whose
    ``payload`` was fixed (a JSON string or object) and goes back to its ``topic`` (authorized
    again as the gateway would, when the gateway wrote it), or a plain message for
    ``default_topic``."""
    for n, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            yield Candidate(where, "", None, f"invalid_json: {exc}")
            continue
        if isinstance(obj, dict) and obj.get("type") == RECORD_TYPE:
            if obj.get("payload_truncated"):
                yield Candidate(where, "", None, "payload_truncated", obj)
                continue
            topic = obj.get("topic") or str(obj.get("dlq_topic", "")).removesuffix(".dlq")
            yield Candidate(where, topic, payload_bytes(obj.get("payload")), "", obj)
        elif default_topic is None:
            yield Candidate(where, "", None, "no_topic: a plain message needs --topic")
        else:
            yield Candidate(where, settings.topic(default_topic), line.strip())


def from_records(records: Iterable[DeadLetter], override: bool = False) -> Iterator[Candidate]:
    """A candidate per dead letter; ``override`` lifts the gateway's authorization (only for
    dead letters the operator named one by one)."""
    for d in records:
        where = f"{d.dlq_topic}:{d.dlq_partition}:{d.dlq_offset}"
        if d.truncated:
            yield Candidate(where, d.topic, None, "payload_truncated", d.record, override)
        else:
            raw = payload_bytes(d.record.get("payload", ""))
            yield Candidate(where, d.topic, raw, "", d.record, override)


def send(settings: Settings, items: Iterable[Candidate], dry_run: bool = False) -> ReplayResult:
    """Validate, authorize and send each payload to its topic; report everything not sent and
    why."""
    from services.ingest.gateway import grants

    result = ReplayResult()
    known = {settings.topic(t) for t in TOPICS}
    checks: dict[str, Callable[[bytes], tuple[str | None, str, Subjects]]] = {}
    credentials = grants(settings)
    producer = None if dry_run else make_producer(settings)
    try:
        for c in items:
            skip, key = c.skip, None
            if not skip and c.topic not in known:
                skip = f"unknown_topic: {c.topic!r} is not a topic of this pipeline"
            if not skip and c.raw is not None:
                check = checks.setdefault(c.topic, _key_and_check(settings, c.topic))
                key, why, subjects = check(c.raw)
                if why:
                    skip = f"still_invalid: {why}"
                elif not c.override:
                    skip = authorize(c.record, subjects, credentials)
            if skip or c.raw is None:
                result.skipped[skip.partition(":")[0]] += 1
                result.problems.append(f"{c.where}: {skip}")
                continue
            if producer is not None:
                producer.send(c.topic, key=key, value=c.raw)
            result.sent += 1
            result.by_topic[c.topic] += 1
            if c.override and authorize(c.record, subjects, credentials):
                result.overridden += 1
        if producer is not None:
            producer.flush(60)
    finally:
        if producer is not None:
            producer.close(10)
    return result
