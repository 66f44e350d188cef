"""Settings from ``INFERLEDGER_*`` environment variables (pydantic-settings).

Plumbing only: the accounting knobs (bucket width, lateness, horizons, token weights) are plain
values here; :func:`services.attribution.settings.accounting_settings` builds the accounting
core's settings from them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EVENTS = "inference-events"
RATES = "gpu-rates"
BILLING = "gpu-billing"
PRICES = "prices"
ALLOCATIONS = "cost-allocations"
ALERTS = "budget-alerts"


class Settings(BaseSettings):
    """Every setting of every process. Unset broker or database: the embedded default."""

    model_config = SettingsConfigDict(env_prefix="INFERLEDGER_", extra="ignore")

    kafka_bootstrap: str | None = Field(default=None, description="host:port[,host:port]")
    kafka_security_protocol: str = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_sasl_mechanism: str | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    database_url: str | None = Field(default=None, description="SQLAlchemy URL (psycopg)")
    topic_prefix: str = Field(default="", description="prefix for every topic name")
    group_prefix: str | None = Field(
        default=None,
        description="prefix for consumer group ids (default: the topic prefix, so pipelines on "
        "separate topic prefixes never share a group)",
    )
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    session_timeout_seconds: float = Field(default=6.0, gt=0)

    bucket_seconds: int = Field(
        default=60,
        gt=0,
        le=7 * 86_400,
        description="width of the accounting buckets; at most a week, so that an amount at the "
        "contract's price limit always fits the ledger's columns",
    )
    allowed_lateness_seconds: int = Field(default=120, ge=0)
    default_currency: str = "USD"
    idle_partition_seconds: float = Field(
        default=30.0,
        gt=0,
        description="an events partition without events this long stops holding the watermark",
    )
    partition_lead_seconds: int = Field(
        default=120,
        ge=0,
        description="how far (in event time) an events partition may run ahead of the slowest "
        "one before the attribution processor pauses it: its messages would only wait in "
        "memory for the slowest partition's watermark; 0 never pauses",
    )
    late_horizon_seconds: int = Field(default=7 * 86_400, ge=0)
    max_request_seconds: int = Field(
        default=86_400,
        ge=1,
        description="longest request accepted (finished_at - started_at); longer: dead-lettered",
    )
    max_future_seconds: int = Field(
        default=300,
        ge=0,
        description="most an event's finished_at may be after the processor's wall clock when "
        "it reads the event; later: dead-lettered as future_event",
    )
    billing_horizon_seconds: int = Field(default=62 * 86_400, ge=0)
    fetch_bytes_per_partition: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="most bytes fetched from one partition per request (faust's "
        "consumer_max_fetch_size); faust's 1 MiB default halves the processors' message rate",
    )
    stream_buffer_messages: int = Field(
        default=1000,
        ge=10,
        description="messages faust buffers per stream before it stops fetching (its "
        "stream_buffer_maxsize, 4096 by default)",
    )
    gc_gen0_threshold: int = Field(
        default=10_000,
        ge=0,
        description="allocations between the cyclic garbage collector's young collections in "
        "the processors (Python's default is 700, which made them spend about 40 % of their "
        "time collecting: bench/micro.py); 0 keeps Python's default",
    )
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        description="longest a consumer fetch waits for data; faust fixes 1500 ms, which some "
        "brokers (Tansu) wait out on every fetch even when data has arrived",
    )
    gateway_listen: str = Field(default="127.0.0.1:8080", description="host:port of the gateway")
    gateway_tokens: dict[SecretStr, dict[str, Any] | None] = Field(
        default_factory=dict,
        description='bearer tokens, JSON: {"<token>": {"name": "cluster-a", "resources": '
        '["node-1"], "tenants": null}} (a null or absent list: any)',
    )
    gateway_max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    gateway_dedup_ids: int = Field(default=100_000, ge=0, description="CloudEvents ids remembered")
    proxy_listen: str = Field(default="127.0.0.1:8081", description="host:port of the proxy")
    proxy_upstreams: list[dict[str, Any]] = Field(
        default_factory=list,
        description='serving nodes, JSON: [{"resource_id": "node-1", "url": "http://10.0.0.5:8000",'
        ' "models": ["llama-70b"], "gpu_count": 8, "engine": "vllm"}]',
    )
    proxy_keys: dict[SecretStr, str] = Field(
        default_factory=dict, description='API key to tenant, JSON: {"sk-abc": "acme"}'
    )
    proxy_upstream_api_key: SecretStr | None = Field(
        default=None, description="API key the proxy sends upstream (the caller's is not passed)"
    )
    attribution_workers: int = Field(
        default=1,
        ge=1,
        description="attribution processes `run all` and `up` start in one consumer group; "
        "they share the events partitions (more than the partitions leaves some idle)",
    )
    publish_queue: int = Field(
        default=4,
        ge=1,
        description="attribution steps whose output may be publishing and storing while the "
        "next ones are decided",
    )
    resident_seconds: int = Field(
        default=0,
        ge=0,
        description="closed buckets older than this behind the watermark leave memory (they are "
        "in Postgres and are loaded back when a late event or a bill touches them)",
    )
    allocated_charge_categories: list[str] = Field(
        default_factory=lambda: ["usage", "credit", "adjustment"],
        description="billing charge categories allocated to tenants (others stay unallocated)",
    )
    token_weights: dict[str, dict[str, Decimal]] = Field(
        default_factory=dict,
        description='per-model weights, JSON: {"llama-70b": {"prompt": "1", "cached": "0.1", '
        '"completion": "4"}}; the key "*" sets the default',
    )
    slos: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='latency objectives per model, JSON: {"llama-70b": {"ttft_seconds": 2, '
        '"tpot_seconds": 0.1}}; the key "*" sets the default; a model with neither has no '
        "objective (its ok requests count as within objective); either limit may be left out",
    )

    take_max: int = Field(default=500, ge=1, description="messages per processing batch")
    take_within_seconds: float = Field(default=0.2, gt=0)
    max_batch_events: int = Field(default=500, ge=1, description="events per produced batch")
    max_message_bytes: int = Field(default=900_000, ge=10_000)
    dlq_payload_limit: int = Field(default=65_536, ge=256)
    metrics_listen: str = Field(
        default="",
        description="host:port of a `run` processor's Prometheus /metrics (empty: none; `up`: "
        "free loopback ports); with `run all` and `up` the attribution processor takes this "
        "port, the ledger writer the next, the alerts processor the one after",
    )

    webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key of budget alert webhooks (X-Inferledger-Signature); a "
        "budget's own secret takes precedence",
    )
    webhook_backoff_seconds: float = Field(
        default=1.0, gt=0, description="first retry delay of a webhook; triples each attempt"
    )
    webhook_max_attempts: int = Field(
        default=10, ge=1, description="attempts per alert and webhook before giving up"
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="longest one webhook attempt may take"
    )
    alerts_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="how often the alerts processor evaluates budgets and delivers alerts",
    )
    data_dir: Path = Field(default=Path(".embedded"), description="embedded broker/db state")
    profile_dir: Path | None = Field(
        default=None, description="write a cProfile of each `run` process here (bench/)"
    )
    log_level: str = "INFO"
    log_format: str = Field(default="auto", description="auto, json or console")

    @field_validator("slos")
    @classmethod
    def _slo_keys(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for model, slo in value.items():
            unknown = set(slo) - {"ttft_seconds", "tpot_seconds"}
            if unknown:
                raise ValueError(f"objective of {model}: unknown keys {sorted(unknown)}")
            if any(not (v >= 0 and v < 10**9) for v in slo.values()):
                raise ValueError(f"objective of {model}: limits must be >= 0 seconds")
        return value

    @field_validator("token_weights", "slos", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    def kafka_security(self) -> dict[str, Any]:
        """TLS and SASL settings as kafka-python client arguments (empty for PLAINTEXT)."""
        out: dict[str, Any] = {}
        if self.kafka_security_protocol.upper() != "PLAINTEXT":
            out["security_protocol"] = self.kafka_security_protocol.upper()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_mechanism"):
            value = getattr(self, f"kafka_{name}")
            if value:
                out[name] = value
        if self.kafka_sasl_username:
            out["sasl_plain_username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            out["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        return out

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def group(self, name: str) -> str:
        prefix = self.topic_prefix if self.group_prefix is None else self.group_prefix
        return f"{prefix}{name}"


def component_listens(listen: str, components: Sequence[str]) -> dict[str, str]:
    """``host:port`` of the metrics of each component started on ``listen`` (``run all``,
    ``up``): one port each, in order, from ``listen``'s port (no host: 127.0.0.1)."""
    host, _, port = listen.rpartition(":")
    return {c: f"{host or '127.0.0.1'}:{int(port) + n}" for n, c in enumerate(components)}


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
