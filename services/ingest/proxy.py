"""The metering proxy (``inferledger proxy``): OpenAI-compatible, in front of serving engines.

vLLM, SGLang, TGI and TensorRT-LLM all serve the OpenAI API, so one reverse proxy meters them
all. For ``/v1/chat/completions`` and ``/v1/completions`` (streaming or not) it maps the caller's
API key to a tenant, picks an upstream node serving the requested model (fewest requests in
flight), forwards the request, measures ``started_at``, ``first_token_at`` and ``finished_at``,
reads the token counts from the response's ``usage`` (asking for it in streams with
``stream_options.include_usage``; the extra usage chunk is not passed on to a client that did
not ask for it), including ``prompt_tokens_details.cached_tokens``, and records one
inference event per request through the emitter SDK, with ``resource_id`` set to the node that
served it. A client that disconnects makes the event ``cancelled``; an upstream error (or an
unreachable upstream) makes it ``error``. Other paths (``/v1/models``, ...) are forwarded
unmetered to the first upstream.

Each event gets the proxy's own id, unique per request (a UUIDv7: time-ordered, random below
the millisecond); the upstream's response id is kept as ``request_id`` only. Engines (and
gateways in front of them) may repeat or leave out their response ids, and an idempotency key
built from them made later requests "duplicates", lost to the ledger. API keys are compared in
constant time (SHA-256 digests through ``hmac.compare_digest``, over every configured key).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from services.ingest.closing import close_producer
from services.ingest.emitter import Emitter
from services.runtime import logs
from services.runtime.config import Settings
from services.runtime.health import Health, kafka_probe
from services.runtime.kafka import make_producer
from services.runtime.metrics import CountersCollector

log = logs.get(__name__)
FLUSH_SECONDS = 5.0
METERED = ("/v1/chat/completions", "/v1/completions")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "authorization"}


@dataclass
class Upstream:
    resource_id: str
    url: str
    models: frozenset[str] | None = None
    gpu_count: int = 1
    engine: str = "openai-compatible"
    in_flight: int = 0

    def serves(self, model: str) -> bool:
        return self.models is None or model in self.models


def upstreams(settings: Settings) -> list[Upstream]:
    """From ``INFERLEDGER_PROXY_UPSTREAMS`` (JSON list of {resource_id, url, models, gpu_count,
    engine})."""
    out = []
    for spec in settings.proxy_upstreams:
        models = spec.get("models")
        out.append(
            Upstream(
                resource_id=str(spec["resource_id"]),
                url=str(spec["url"]).rstrip("/"),
                models=None if models is None else frozenset(models),
                gpu_count=int(spec.get("gpu_count", 1)),
                engine=str(spec.get("engine", "openai-compatible")),
            )
        )
    if not out:
        raise ValueError("INFERLEDGER_PROXY_UPSTREAMS lists no upstream node")
    return out


def _now() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Unique per
    request whatever the upstream answers, and ordered by time (kind to Postgres indexes)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return str(uuid.UUID(int=value))


def _request_id(value: Any) -> str | None:
    """The upstream's response id, if it is a usable id (else None: it never blocks the event)."""
    if not isinstance(value, str) or not value or len(value) > 128:
        return None
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        return None
    return value


class ApiKeys:
    """API key to tenant, found in constant time (no lookup keyed by the presented key)."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._entries = [(hashlib.sha256(k.encode()).digest(), t) for k, t in keys.items()]

    def tenant(self, key: str) -> str | None:
        digest = hashlib.sha256(key.encode()).digest()
        found: str | None = None
        for known, tenant in self._entries:
            if hmac.compare_digest(known, digest):
                found = tenant
        return found


def _error(status: int, message: str, kind: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.json_response(body, status=status)


@dataclass
class Metered:
    """What the proxy learns about one request while forwarding it."""

    tenant: str
    upstream: Upstream
    model: str
    started: datetime = field(default_factory=_now)
    first_token: datetime | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    response_id: str | None = None
    status: str = "ok"
    event_id: str = field(default_factory=new_event_id)
    done: bool = False  # the whole answer came from upstream: a disconnect now is not a cancel

    def event(self) -> dict[str, Any]:
        finished = _now()
        details = self.usage.get("prompt_tokens_details") or {}
        prompt = int(self.usage.get("prompt_tokens") or 0)
        cached = min(int(details.get("cached_tokens") or 0), prompt)
        return {
            "event_id": self.event_id,
            "tenant_id": self.tenant,
            "resource_id": self.upstream.resource_id,
            "model": self.model,
            "engine": self.upstream.engine,
            "request_id": _request_id(self.response_id),
            "started_at": self.started.isoformat(),
            "first_token_at": None if self.first_token is None else self.first_token.isoformat(),
            "finished_at": finished.isoformat(),
            "prompt_tokens": prompt,
            "cached_prompt_tokens": cached,
            "completion_tokens": int(self.usage.get("completion_tokens") or 0),
            "status": self.status,
            "gpu_count": self.upstream.gpu_count,
        }


class Proxy:
    """``flush_seconds``: at shutdown, how long the broker has to acknowledge the metered
    events still pending; what it has not acknowledged by then is counted in one error line
    (``proxy events undelivered``) and dropped, so that stopping never hangs on an outage."""

    def __init__(
        self,
        settings: Settings,
        emitter: Emitter | None = None,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.settings = settings
        self.nodes = upstreams(settings)
        self.keys = ApiKeys({k.get_secret_value(): t for k, t in settings.proxy_keys.items()})
        self.flush_seconds = flush_seconds
        self._emitter = emitter
        self._producer: KafkaProducer | None = None  # the emitter's, when the proxy made it
        self.health = Health()
        self.health.add_probe(
            "kafka", kafka_probe(settings.kafka_bootstrap, settings.kafka_security())
        )
        self._session: aiohttp.ClientSession | None = None
        self._turn = itertools.count()
        self.counters: dict[str, int] = {}

    @property
    def emitter(self) -> Emitter:
        if self._emitter is None:
            # the proxy's own producer (the emitter's settings), so that stopping can give up
            self._producer = make_producer(
                self.settings,
                compression_type="gzip",
                retries=10,
                linger_ms=5,
                client_id="inferledger-proxy",
            )
            self._emitter = Emitter(
                self.settings, source="proxy", linger_seconds=0.5, producer=self._producer
            )
        return self._emitter

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.gateway_max_body_bytes)
        for path in METERED:
            app.router.add_post(path, self.metered)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_route("*", "/{tail:.*}", self.passthrough)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        self.emitter.stats["started"] += 0  # connect to Kafka before the first request

    async def _stop(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
        if self._emitter is not None:
            await asyncio.to_thread(self._close_emitter, self._emitter)

    def _close_emitter(self, emitter: Emitter) -> None:
        """Flush within ``flush_seconds``; what the broker has not acknowledged by then is
        lost to the ledger, and said so in one error line with the count."""
        delivered = emitter.flush(self.flush_seconds)
        if self._producer is not None:
            delivered = close_producer(self._producer, 0 if not delivered else 1) and delivered
        if not delivered:
            stats = emitter.stats
            lost = stats["recorded"] - stats["sent"]
            log.error(
                "proxy events undelivered",
                undelivered=lost,
                flush_seconds=self.flush_seconds,
                detail=f"the broker did not acknowledge {lost} metered event(s) before "
                "shutdown: they are not in Kafka and will not reach the ledger",
            )
        emitter.close(timeout=1 if self._producer is not None else self.flush_seconds)

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the proxy app has not started"
        return self._session

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the broker answers (metered events can be delivered), else 503."""
        ok = await asyncio.to_thread(self.health.check, "kafka")
        body: dict[str, Any] = {
            "ok": ok,
            "kafka": "connected" if ok else "down",
            "upstreams": [n.resource_id for n in self.nodes],
        }
        if not ok:
            body["failing"] = self.health.status()["failing"]
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus: the proxy's counters and its emitter's (queued, sent, dropped, DLQ)."""
        registry = CollectorRegistry()
        registry.register(CountersCollector("proxy", self.counters))
        registry.register(CountersCollector("emitter", self.emitter.stats))
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _pick(self, model: str) -> Upstream | None:
        candidates = [n for n in self.nodes if n.serves(model)]
        if not candidates:
            return None
        turn = next(self._turn)
        return min(
            candidates, key=lambda n: (n.in_flight, (self.nodes.index(n) - turn) % len(self.nodes))
        )

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    async def metered(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        tenant = self.keys.tenant(key) if key else None
        if tenant is None:
            self._count("unauthorized")
            return _error(401, "unknown API key", "invalid_request_error")
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"request body is not JSON: {exc}", "invalid_request_error")
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str):
            return _error(400, "the request names no model", "invalid_request_error")
        node = self._pick(model)
        if node is None:
            return _error(404, f"no upstream serves model {model!r}", "invalid_request_error")
        streaming = bool(body.get("stream"))
        client_wants_usage = True
        if streaming:
            options = dict(body.get("stream_options") or {})
            client_wants_usage = bool(options.get("include_usage"))
            options["include_usage"] = True
            body["stream_options"] = options
        meter = Metered(tenant, node, model)
        node.in_flight += 1
        try:
            if streaming:
                return await self._stream(request, body, meter, client_wants_usage)
            return await self._unary(request, body, meter)
        except asyncio.CancelledError:
            if not meter.done:  # the client went away mid-answer (aiohttp cancels the handler)
                meter.status = "cancelled"
            raise
        finally:
            node.in_flight -= 1
            self._count(f"requests.{meter.status}")
            self.emitter.record(meter.event())

    def _upstream_headers(self, request: web.Request) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        upstream_key = self.settings.proxy_upstream_api_key
        if upstream_key is not None and upstream_key.get_secret_value():
            headers["Authorization"] = f"Bearer {upstream_key.get_secret_value()}"
        return headers

    async def _unary(
        self, request: web.Request, body: dict[str, Any], meter: Metered
    ) -> web.Response:
        url = meter.upstream.url + request.path
        try:
            async with self.session.post(
                url, json=body, headers=self._upstream_headers(request)
            ) as up:
                answer = await _relay(up)
                meter.done = True
        except aiohttp.ClientError as exc:
            meter.status = "error"
            return _error(502, f"upstream {meter.upstream.resource_id} failed: {exc}", "upstream")
        if answer.status >= 400:
            meter.status = "error"
        else:
            try:
                doc = json.loads(answer.body)  # type: ignore[arg-type]
                meter.usage = doc.get("usage") or {}
                meter.response_id = doc.get("id")
            except (json.JSONDecodeError, AttributeError):
                pass
        return answer

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        meter: Metered,
        client_wants_usage: bool,
    ) -> web.StreamResponse:
        url = meter.upstream.url + request.path
        try:
            async with self.session.post(
                url, json=body, headers=self._upstream_headers(request)
            ) as up:
                if up.status >= 400:
                    meter.status = "error"
                    return await _relay(up)
                out = web.StreamResponse(
                    status=up.status,
                    headers={
                        "Content-Type": up.headers.get("Content-Type", "text/event-stream"),
                        "Cache-Control": "no-cache",
                    },
                )
                await out.prepare(request)
                try:
                    async for line in up.content:
                        if self._observe(line, meter) or client_wants_usage:
                            await out.write(line)
                except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                    if not meter.done:
                        meter.status = "cancelled"
                    return out
                except aiohttp.ClientError:
                    meter.status = "error"
                    return out
                meter.done = True
                await out.write_eof()
                return out
        except aiohttp.ClientError as exc:
            meter.status = "error"
            return _error(502, f"upstream {meter.upstream.resource_id} failed: {exc}", "upstream")

    @staticmethod
    def _observe(line: bytes, meter: Metered) -> bool:
        """Learn from one SSE line; False for the usage-only chunk the proxy asked for."""
        if not line.startswith(b"data:"):
            return True
        data = line[5:].strip()
        if data == b"[DONE]":
            meter.done = True
            return True
        if not data:
            return True
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        meter.response_id = meter.response_id or chunk.get("id")
        choices = chunk.get("choices") or []
        if meter.first_token is None and any(_has_token(c) for c in choices):
            meter.first_token = _now()
        if chunk.get("usage"):
            meter.usage = chunk["usage"]
            return bool(choices)  # a usage-only chunk: pass on only if the client asked
        return True

    async def passthrough(self, request: web.Request) -> web.StreamResponse:
        node = self.nodes[0]
        try:
            async with self.session.request(
                request.method,
                node.url + request.path_qs,
                data=await request.read(),
                headers=self._upstream_headers(request),
            ) as up:
                return await _relay(up)
        except aiohttp.ClientError as exc:
            return _error(502, f"upstream failed: {exc}", "upstream")


async def _relay(up: aiohttp.ClientResponse) -> web.Response:
    """An upstream answer read whole and passed on with its status and content type."""
    raw = await up.read()
    ctype = up.headers.get("Content-Type", "application/json")
    return web.Response(body=raw, status=up.status, headers={"Content-Type": ctype})


def _has_token(choice: Any) -> bool:
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta") or {}
    return bool(choice.get("text") or delta.get("content") or delta.get("reasoning_content"))
