"""The HTTP ingest gateway (``inferledger gateway``): events, rates and bills over HTTP.

Producers authenticate with a bearer token from configuration; a token may be limited to some
resource ids and tenants. Each item of a request is validated on its own and the answer says, per
item, what was accepted and what was rejected and why: 200 when everything was accepted, 207
when some was, 400 when nothing was valid (403 when everything was forbidden to the token),
401 for a missing or wrong token, 413 for a body over the limit and 415 for an unknown content
type. Accepted events are published in per-resource batches and the answer is sent only once
Kafka acknowledged them. Every rejected item goes to ``<topic>.dlq`` with its reason.

Accepted forms for events (``POST /v1/events``):

* ``application/json``: one event, a batch envelope, or a JSON array of events;
* ``application/x-ndjson`` (or ``application/jsonl``): one event per line;
* ``application/cloudevents+json``: one structured CloudEvent of type
  ``inferledger.inference_event.v1`` with the event as ``data``;
* ``application/cloudevents-batch+json``: a JSON array of such CloudEvents.

Tokens are compared in constant time (SHA-256 digests through ``hmac.compare_digest``, over
every configured token). A request without a valid token is refused before its body is read:
nothing of it is stored, not even a dead letter (it is counted in
``inferledger_gateway_unauthenticated_total``). Every dead letter of an authenticated request
records the credential that sent it (``credential``: the token's configured name, and
``credential_id``: ``sha256:`` and the first 16 hex digits of the token's SHA-256, never the
token), so that ``inferledger dlq replay`` can apply the same authorization again.

CloudEvents are deduplicated by ``(source, id)`` over the last ``gateway_dedup_ids`` ids.
Rates (``POST /v1/rates``) and billing lines (``POST /v1/billing``) take JSON or NDJSON.
``GET /healthz`` and ``GET /metrics`` (Prometheus) need no token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from services.contracts import BillingLine, GpuRate, InferenceEvent, dumps
from services.contracts.wire import DecodeError
from services.ingest import payloads
from services.ingest.closing import close_producer
from services.ingest.files import batch_events
from services.ingest.payloads import Item
from services.runtime import logs
from services.runtime.config import BILLING, EVENTS, RATES, Settings
from services.runtime.health import Health, kafka_probe
from services.runtime.kafka import dead_letter, make_producer

log = logs.get(__name__)
CLOSE_SECONDS = 5.0  # at shutdown, how long the broker has to acknowledge what was sent


def credential_id(token: str) -> str:
    """A stable, non-secret identifier of a token: what dead letters record (never the token)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Grant:
    """What one bearer token may write (None: any). ``id`` identifies the token without
    revealing it; ``name`` is the operator's label for it."""

    name: str
    resources: frozenset[str] | None = None
    tenants: frozenset[str] | None = None
    id: str = ""

    def forbids(self, resource_id: str | None, tenant_id: str | None = None) -> str | None:
        if self.resources is not None and resource_id not in self.resources:
            return f"token {self.name!r} may not write resource {resource_id!r}"
        if self.tenants is not None and tenant_id is not None and tenant_id not in self.tenants:
            return f"token {self.name!r} may not write tenant {tenant_id!r}"
        return None


class Credentials:
    """The configured tokens, found in constant time.

    A presented token is hashed and its digest compared with ``hmac.compare_digest`` against
    every configured token's digest (no early exit, no lookup keyed by the token), so the time
    an answer takes says nothing about how much of a token was right."""

    def __init__(self, grants: list[tuple[bytes, Grant]]) -> None:
        self._entries = grants
        self._by_id = {g.id: g for _, g in grants}

    def find(self, token: str) -> Grant | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: Grant | None = None
        for known, grant in self._entries:
            if hmac.compare_digest(known, digest):
                found = grant
        return found

    def by_id(self, cid: str) -> Grant | None:
        """The grant of the token with this credential id (dead-letter replay)."""
        return self._by_id.get(cid)

    def __len__(self) -> int:
        return len(self._entries)


def grants(settings: Settings) -> Credentials:
    """Tokens from ``INFERLEDGER_GATEWAY_TOKENS`` (JSON), e.g.
    ``{"s3cret": {"name": "cluster-a", "resources": ["node-1"], "tenants": null}}``."""
    out = []
    for secret, spec in settings.gateway_tokens.items():
        token = secret.get_secret_value()
        spec = spec or {}
        resources, tenants = spec.get("resources"), spec.get("tenants")
        cid = credential_id(token)
        grant = Grant(
            str(spec.get("name") or cid),
            None if resources is None else frozenset(resources),
            None if tenants is None else frozenset(tenants),
            cid,
        )
        out.append((hashlib.sha256(token.encode()).digest(), grant))
    return Credentials(out)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "inferledger_gateway_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.items = Counter(
            "inferledger_gateway_items",
            "items received, by kind and outcome (accepted, duplicate or the rejection reason)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.unauthenticated = Counter(
            "inferledger_gateway_unauthenticated",
            "requests refused for a missing or wrong token (their bodies are never read or kept)",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "inferledger_dead_letters",
            "records sent to a dead-letter topic, by topic and reason",
            ["topic", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "inferledger_gateway_request_seconds",
            "time to answer a request (including Kafka's acknowledgement)",
            ["endpoint"],
            registry=self.registry,
        )


class Gateway:
    def __init__(self, settings: Settings, producer: KafkaProducer | None = None) -> None:
        self.settings = settings
        self.grants = grants(settings)
        self.metrics = Metrics()
        self._producer = producer
        self._seen: OrderedDict[str, None] = OrderedDict()  # CloudEvents source and id
        # the broker as /healthz sees it: asked on each /healthz, failed by failed publishes
        self.health = Health()
        self.health.add_probe(
            "kafka", kafka_probe(settings.kafka_bootstrap, settings.kafka_security())
        )

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = make_producer(
                self.settings, compression_type="gzip", client_id="inferledger-gateway"
            )
        return self._producer

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.gateway_max_body_bytes)
        app.router.add_post("/v1/events", self.events)
        app.router.add_post("/v1/rates", self.rates)
        app.router.add_post("/v1/billing", self.billing)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _: web.Application) -> None:
        if self._producer is None:
            return
        if not await asyncio.to_thread(close_producer, self._producer, CLOSE_SECONDS):
            log.error(
                "gateway stopped with records unacknowledged by the broker",
                close_seconds=CLOSE_SECONDS,
            )

    # -- endpoints ------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        """200 ``{"ok": true, "kafka": "connected"}`` when the broker answers now; else 503
        with ``"kafka": "down"`` and what failed."""
        ok = await asyncio.to_thread(self.health.check, "kafka")
        status = 200 if ok else 503
        self.metrics.requests.labels("healthz", str(status)).inc()
        body: dict[str, Any] = {"ok": ok, "kafka": "connected" if ok else "down"}
        if not ok:
            body["failing"] = self.health.status()["failing"]
        return web.json_response(body, status=status)

    async def metrics_page(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def events(self, request: web.Request) -> web.Response:
        return await self._handle(request, "events", EVENTS, InferenceEvent)

    async def rates(self, request: web.Request) -> web.Response:
        return await self._handle(request, "rates", RATES, GpuRate)

    async def billing(self, request: web.Request) -> web.Response:
        return await self._handle(request, "billing", BILLING, BillingLine)

    # -- the common path ------------------------------------------------------------------
    async def _handle(
        self, request: web.Request, kind: str, topic_name: str, model: type[BaseModel]
    ) -> web.Response:
        topic = self.settings.topic(topic_name)
        with self.metrics.latency.labels(kind).time():
            status, body = await self._process(request, kind, topic, model)
        self.metrics.requests.labels(kind, str(status)).inc()
        return web.json_response(body, status=status)

    async def _process(
        self, request: web.Request, kind: str, topic: str, model: type[BaseModel]
    ) -> tuple[int, dict[str, Any]]:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        grant = self.grants.find(token) if token else None
        if grant is None:  # refused before the body is read: nothing of it is stored
            reason = "missing_token" if not token else "invalid_token"
            self.metrics.unauthenticated.labels(kind, reason).inc()
            return 401, {"error": reason, "detail": "send Authorization: Bearer <token>"}
        limit = self.settings.gateway_max_body_bytes
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            err = payloads.too_large(limit, exc.text or "")
            await self._dead_letters(topic, grant, [(err.reason, err.detail, "")])
            return 413, {"error": err.reason, "detail": payloads.too_large(limit).detail}
        try:
            items = payloads.parse(body, request.content_type, kind, limit)
        except DecodeError as exc:
            await self._dead_letters(topic, grant, [(exc.reason, exc.detail, body)])
            return payloads.status_of(exc), {"error": exc.reason, "detail": exc.detail}
        if not items:
            return 400, {"error": "empty", "detail": "the body holds no item"}
        payloads.validate(items, model, grant.forbids)
        fresh = [i for i in items if i.accepted and (i.id is None or not self._seen_before(i))]
        duplicates = sum(1 for i in items if i.accepted) - len(fresh)
        if fresh:
            try:
                await self._publish(topic, kind, [i.model for i in fresh if i.model])
            except Exception as exc:  # Kafka did not take them: nothing was accepted
                self.health.failed("kafka", exc)
                log.error("gateway publish failed", error=repr(exc))
                return 503, {"error": "kafka_unavailable", "detail": repr(exc)}
            for i in fresh:
                if i.id is not None:
                    self._remember(i)
        rejected = payloads.rejections(items)
        await self._dead_letters(topic, grant, rejected)
        for reason, _, _ in rejected:
            self.metrics.items.labels(kind, reason).inc()
        self.metrics.items.labels(kind, "accepted").inc(len(fresh))
        self.metrics.items.labels(kind, "duplicate").inc(duplicates)
        return payloads.answer(items, duplicates)

    def _seen_before(self, item: Item) -> bool:
        return item.id is not None and item.id in self._seen

    def _remember(self, item: Item) -> None:
        assert item.id is not None
        self._seen[item.id] = None
        while len(self._seen) > self.settings.gateway_dedup_ids:
            self._seen.popitem(last=False)

    async def _publish(self, topic: str, kind: str, models: list[BaseModel]) -> None:
        def send() -> list[Any]:
            if kind == "events":
                events = [m for m in models if isinstance(m, InferenceEvent)]
                batches = batch_events(
                    events, self.settings.max_batch_events, self.settings.max_message_bytes
                )
                return [self.producer.send(topic, key=r, value=v) for r, v, _ in batches]
            return [
                self.producer.send(
                    topic, key=getattr(m, "resource_id", None) or "unallocated", value=dumps(m)
                )
                for m in models
            ]

        futures = await asyncio.to_thread(send)
        await asyncio.gather(*(kafka_done(f) for f in futures))

    async def _dead_letters(
        self, topic: str, grant: Grant, rejected: list[tuple[str, str, Any]]
    ) -> None:
        """Dead letters of an authenticated request, each naming the credential that sent it."""
        records = [
            dead_letter(
                topic,
                reason,
                detail,
                payload,
                self.settings.dlq_payload_limit,
                source="gateway",
                credential=grant.name,
                credential_id=grant.id,
            )
            for reason, detail, payload in rejected
        ]
        if not records:
            return
        for reason, _, _ in rejected:
            self.metrics.dead_letters.labels(f"{topic}.dlq", reason).inc()

        def send() -> list[Any]:
            return [self.producer.send(f"{topic}.dlq", value=r) for r in records]

        try:
            await asyncio.gather(*(kafka_done(f) for f in await asyncio.to_thread(send)))
        except Exception as exc:  # the answer still says why; the log says the DLQ failed
            log.error("gateway could not write dead letters", error=repr(exc))


def kafka_done(future: Any) -> asyncio.Future[Any]:
    """A kafka-python send future as an asyncio future (resolved from the I/O thread)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is None:
            done.set_result(value)
        else:
            done.set_exception(exc)

    def ok(value: Any) -> None:
        loop.call_soon_threadsafe(settle, value, None)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(settle, None, exc)

    future.add_callback(ok)
    future.add_errback(failed)
    return done
