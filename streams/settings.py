"""Every setting segstream reads, from `SEGSTREAM_*` environment variables.

This is the only module that reads the environment. A wrong value fails at
start-up with a message naming the variable.

>>> Settings(partitions=8).partitions
8
>>> try:
...     Settings(partitions=0)
... except SettingsError as error:
...     print(error)
invalid setting SEGSTREAM_PARTITIONS=0: Input should be greater than or equal to 1
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, FilePath, SecretStr, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from state.keys import KeyLayout

if TYPE_CHECKING:
    from processors.privacy import PrivacyPolicy
    from processors.training import TrainerConfig

ENV_PREFIX = "SEGSTREAM_"

TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]


def default_rules_file() -> Path:
    """The rules file shipped with segstream."""
    return Path(str(resources.files("processors") / "rules" / "default.yaml"))


class SettingsError(ValueError):
    """A setting has a value segstream cannot use."""


class Settings(BaseSettings):
    """segstream's configuration; each field is `SEGSTREAM_<NAME>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, use_attribute_docstrings=True
    )

    kafka_bootstrap: str = Field("127.0.0.1:9092", min_length=1)
    """Kafka bootstrap servers, `host:port[,host:port...]`."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    """SASL mechanism with a SASL protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."""
    kafka_sasl_username: str = ""
    """SASL user name; required with a SASL protocol."""
    kafka_sasl_password: SecretStr = SecretStr("")
    """SASL password; required with a SASL protocol."""
    kafka_ssl_ca_location: FilePath | None = None
    """PEM file of the CA that signed the brokers' certificates (SSL protocols); default: the
    system's trust store."""
    kafka_ssl_certificate_location: FilePath | None = None
    """PEM file of the client certificate, for brokers that require mutual TLS."""
    kafka_ssl_key_location: FilePath | None = None
    """PEM file of the client certificate's private key."""
    redis_url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://")
    """Redis URL of the segment store: `rediss://` for TLS, `user:password@` for ACL users,
    TLS options as query parameters (`?ssl_ca_certs=/ca.pem`)."""
    redis_cluster: bool = False
    """Whether the segment store is a Redis Cluster; `SEGSTREAM_REDIS_URL` then names one of
    its nodes, from which the others are found."""
    redis_prefix: str = Field("seg", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    """Prefix of every Redis key segstream writes."""

    events_topic: TopicName = "events"
    """Topic the trackers' events arrive on, keyed by user id."""
    dead_letter_topic: TopicName = "events.dlq"
    """Topic of undecodable events: the original bytes with `reason` and `detail` headers."""
    changes_topic: TopicName = "segment-changes"
    """Topic of segment changes, keyed by user id."""
    rules_topic: TopicName = "rules"
    """Compacted topic of published rule versions; workers follow it."""
    features_topic: TopicName = "features"
    """Topic of users' feature vectors, many per message, from the workers to the trainer."""
    models_topic: TopicName = "models"
    """Compacted topic of model snapshots; workers follow it."""
    examples_topic: TopicName = "examples"
    """Topic of labelled point-in-time examples, many per message, from the workers to the
    trainer (docs/predictions.md)."""
    destinations_topic: TopicName = "destinations"
    """Compacted topic of published destination files; deliverers follow it."""
    deliveries_dlq_topic: TopicName = "deliveries.dlq"
    """Topic of changes a webhook destination refused or never took, with `destination`,
    `status` and `reason` headers."""
    destinations_file: FilePath | None = None
    """YAML file of webhook destinations `segstream deliver` uses until a file is published
    with `segstream destinations apply`."""
    delivery_concurrency: int = Field(64, ge=1, le=10_000)
    """Most webhook requests in flight at one destination (each user's in order)."""
    delivery_backoff_seconds: float = Field(0.5, gt=0, le=60)
    """Wait before a webhook's first retry, in s; it doubles with each further attempt up to
    `SEGSTREAM_DELIVERY_BACKOFF_MAX_SECONDS`, and each wait is drawn at random between half
    of it and all of it."""
    delivery_backoff_max_seconds: float = Field(30, gt=0, le=3_600)
    """Longest wait between two attempts of a webhook, in s."""
    partitions: int = Field(4, ge=1, le=1024)
    """Partitions of the events topic (and of the change topic) when segstream creates them."""
    replication_factor: int = Field(1, ge=1, le=16)
    """Replication factor of the topics segstream creates."""

    group_id: str = Field("segstream-worker", min_length=1)
    """Consumer group of the workers."""
    batch_max_events: int = Field(20_000, ge=1, le=1_000_000)
    """Most events one batch consumes; under a backlog, a larger batch loads and writes each
    user once for more of their events."""
    batch_max_wait_ms: int = Field(10, ge=1, le=60_000)
    """Longest the worker waits for an event before it looks at due timers, rules and models
    again, in milliseconds; a batch takes the events that have arrived without waiting to fill."""
    vector_interval_ms: int = Field(1_000, ge=0, le=600_000)
    """How often a worker sends the trainer each user's latest feature vector, in ms; 0:
    after every batch."""
    session_timeout_ms: int = Field(6_000, ge=1_000, le=300_000)
    """Consumer-group session timeout: how fast a dead worker's partitions move, in ms. With
    the `consumer` group protocol it is set as the workers' group configuration, within the
    broker's `group.consumer.min.session.timeout.ms` (45,000 by default; the embedded
    broker's is 1,000)."""
    group_protocol: Literal["auto", "consumer", "classic"] = "auto"
    """The workers' consumer-group protocol: `consumer` (KIP-848: the broker assigns
    partitions incrementally, and a worker joining or leaving pauses no other), `classic`
    (with the cooperative-sticky assignor), or `auto`: `consumer` where the broker offers
    it (`group.coordinator.rebalance.protocols`), `classic` otherwise."""
    allowed_lateness_seconds: float = Field(3_600, ge=0, le=30 * 86_400)
    """How far behind a partition's newest event time an event may arrive and still count, in s."""
    firing_delay_seconds: float = Field(5, ge=0, le=30 * 86_400)
    """How far behind a partition's newest event time its timers fire, in s; at most the
    lateness. A later event is still applied and corrects what was announced (reason `late`)."""
    keep_traits: Literal["rules", "all"] = "rules"
    """Which identify traits a user's state keeps: those the rules in force compare
    (`rules`), or every one (`all`, up to 200 a message)."""
    dedup_horizon_seconds: float = Field(3_600, ge=0, le=30 * 86_400)
    """How long a `messageId` is remembered, in event-time seconds; at least the lateness."""
    retention_days: float = Field(400, gt=0)
    """Users without events for longer than this, in event-time days, expire with their state."""
    idle_watermark_seconds: float = Field(60, ge=0)
    """After this long without messages, a partition's clocks follow the wall clock (minus the
    lateness and the firing delay), in s; 0: never. Replayed messages keep a partition on
    event time."""
    timers_per_batch: int = Field(5_000, ge=1, le=1_000_000)
    """Most due timers one batch fires; a backlog fires over the following batches."""
    timer_shards: int = Field(4_096, ge=1, le=1_048_576)
    """Redis sorted sets each partition's timers are spread over; keep a partition's users
    below 128 times this, so each set stays compactly encoded."""
    resident_users: int = Field(50_000, ge=0, le=100_000_000)
    """Users a worker keeps decoded in memory between batches, shared over its partitions:
    a user whose stored state nobody changed since is not decoded again. 0 keeps none; each
    takes about 4 KB with the default rules, 24 KB with twenty computed traits."""
    max_future_seconds: float = Field(86_400, ge=0)
    """Events stamped further than this past the wall clock are dead-lettered, in s."""
    max_event_bytes: int = Field(32 * 1024, ge=256, le=1024 * 1024)
    """Largest event accepted, in bytes; larger ones are dead-lettered as `oversized`."""

    rules_file: Path = Field(default_factory=default_rules_file)
    """YAML rules file the workers start with."""

    snapshot_seconds: float = Field(30, ge=1, le=86_400)
    """How often the trainer publishes a model snapshot, in s."""
    cluster_k_min: int = Field(2, ge=1, le=50)
    """Fewest clusters the trainer may choose."""
    cluster_k_max: int = Field(8, ge=1, le=50)
    """Most clusters the trainer may choose (by silhouette, when it (re)clusters)."""
    cluster_min_share: float = Field(0.01, ge=0, lt=1)
    """Clusters holding less than this fraction of users are merged into their neighbours."""
    sample_users: int = Field(5_000, ge=100, le=1_000_000)
    """Users the trainer samples for percentiles, shares and choosing k."""
    cluster_min_users: int = Field(500, ge=10)
    """Users with enough history the trainer needs before it first clusters."""
    predictions: bool = False
    """Whether every user takes a point-in-time example at each UTC midnight of event time,
    labelled 30 and 90 days later for the trainer to learn the predictions from
    (docs/predictions.md): a timer and a state write per user per week."""
    cold_start_events: int = Field(5, ge=0)
    """Events a user needs before joining a cluster; fewer means `cold-start`."""
    recluster_seconds: float = Field(900, ge=0)
    """How long a clustering stands before the trainer re-clusters, in s; 0: only on drift."""
    drift_delta: float = Field(0.002, gt=0, lt=1)
    """Confidence of the ADWIN drift detector on assignment distances; smaller is stricter."""
    trainer_web_port: int = Field(6066, ge=0, le=65_535)
    """Port of the trainer's web endpoint (`/model`, `/metrics`); 0 turns it off."""

    http_host: str = Field("127.0.0.1", min_length=1)
    """Address the collector and the read API listen on; 0.0.0.0 to serve other hosts."""
    collector_port: int = Field(8088, ge=1, le=65_535)
    """Port of the collector (Segment-compatible Tracking API, `/metrics`, probes)."""
    write_keys: SecretStr = SecretStr("")
    """Comma-separated write keys the collector accepts, sent as the HTTP basic-auth user."""
    cors_origins: str = Field(
        "*", pattern=r"^\s*(\*|https?://[^/,\s]+)?(\s*,\s*https?://[^/,\s]+)*\s*$"
    )
    """Comma-separated origins (`https://shop.example`) whose pages may send events to the
    collector from a browser; `*` for any page; empty for none."""
    collector_public_url: str = Field("", pattern=r"^(https?://[^/\s]+(/\S*)?)?$")
    """The collector's URL as browsers reach it (behind a proxy or load balancer); the settings
    browser SDKs fetch point them there. Empty: the scheme and `Host` of each request."""
    ack_timeout_seconds: float = Field(10, gt=0, le=300)
    """How long the collector waits for the broker to acknowledge a request's events before
    answering 503, in s."""
    max_batch_bytes: int = Field(500 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest body of a `/v1/batch` call the collector takes, in bytes (after gzip)."""
    api_port: int = Field(8080, ge=1, le=65_535)
    """Port of the read API (`/v1/users`, `/v1/segments`, `/metrics`, probes)."""
    api_tokens: SecretStr = SecretStr("")
    """Comma-separated bearer tokens the read API accepts."""
    admin_tokens: SecretStr = SecretStr("")
    """Comma-separated `name:token` pairs: tokens that sign in to the console (`/console`)
    and may publish rules there, each publication noted with the token's name."""
    user_changes_kept: int = Field(50, ge=0, le=1_000)
    """Segment changes kept per user for the console's profiles, the latest first; 0 keeps
    none. Each costs about 64 bytes of Redis (docs/console.md)."""
    dev_mode: bool = False
    """Development only: with no write keys set the collector takes every call, with no
    tokens set the read API answers everyone. `segstream dev env` turns it on."""
    pii_properties: str = Field("email,phone", pattern=r"^[^,]*(,[^,]*)*$")
    """Comma-separated names of event properties and traits that are personal data; they are
    hashed or dropped (SEGSTREAM_PII_ACTION) before an event is stored anywhere."""
    pii_action: Literal["hash", "drop"] = "hash"
    """What happens to those values: `hash` (SHA-256 of the trimmed, lower-cased text, as
    customer-match lists expect) or `drop`."""

    metrics_port: int = Field(0, ge=0, le=65_535)
    """Port of the worker's Prometheus `/metrics`; 0 turns it off."""
    metrics_host: str = Field("127.0.0.1", min_length=1)
    """Address `/metrics` listens on; 0.0.0.0 to be scraped from other hosts."""
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    """Logging threshold: DEBUG, INFO, WARNING or ERROR."""

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.cluster_k_min > self.cluster_k_max:
            raise PydanticCustomError(
                "cluster_k",
                "SEGSTREAM_CLUSTER_K_MIN must not exceed SEGSTREAM_CLUSTER_K_MAX",
            )
        if not self.cluster_k_max <= self.cluster_min_users <= self.sample_users:
            raise PydanticCustomError(
                "cluster_users",
                "need SEGSTREAM_CLUSTER_K_MAX <= SEGSTREAM_CLUSTER_MIN_USERS "
                "<= SEGSTREAM_SAMPLE_USERS",
            )
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise PydanticCustomError(
                "kafka_sasl",
                "SEGSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs SEGSTREAM_KAFKA_SASL_USERNAME "
                "and SEGSTREAM_KAFKA_SASL_PASSWORD",
                {"protocol": self.kafka_security_protocol},
            )
        if (self.kafka_ssl_certificate_location is None) != (self.kafka_ssl_key_location is None):
            raise PydanticCustomError(
                "kafka_ssl",
                "SEGSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION and SEGSTREAM_KAFKA_SSL_KEY_LOCATION "
                "go together",
            )
        if any(
            not name.strip() or not token.strip() or not colon
            for name, colon, token in (
                part.partition(":")
                for part in self.admin_tokens.get_secret_value().split(",")
                if part.strip()
            )
        ):
            raise PydanticCustomError(
                "admin_tokens",
                "SEGSTREAM_ADMIN_TOKENS holds `name:token` pairs separated by commas",
            )
        if self.firing_delay_seconds > self.allowed_lateness_seconds:
            raise PydanticCustomError(
                "firing_delay",
                "SEGSTREAM_FIRING_DELAY_SECONDS must not exceed SEGSTREAM_ALLOWED_LATENESS_SECONDS",
            )
        if self.dedup_horizon_seconds < self.allowed_lateness_seconds:
            raise PydanticCustomError(
                "dedup_horizon",
                "SEGSTREAM_DEDUP_HORIZON_SECONDS must be at least "
                "SEGSTREAM_ALLOWED_LATENESS_SECONDS, or a late duplicate could be applied twice",
            )
        return self

    @property
    def expiry_seconds(self) -> float:
        """How long after a user's last event the firing clock expires them: the retention,
        plus the time the firing clock runs ahead of the watermark, so that no event still
        accepted finds them gone.

        >>> Settings(retention_days=1, allowed_lateness_seconds=60).expiry_seconds
        86455.0
        """
        ahead = self.allowed_lateness_seconds - self.firing_delay_seconds
        return self.retention_days * 86_400 + ahead

    def key_layout(self) -> KeyLayout:
        """The Redis keys of this deployment: its prefix, tagged by events partition.

        >>> Settings(redis_prefix="shop").key_layout().state(3, "ann")
        'shop:{events.3}:s:ann'
        """
        return KeyLayout(self.redis_prefix, self.events_topic)

    def secrets(self, name: str) -> tuple[str, ...]:
        """The comma-separated values of a secret setting, such as `write_keys`; raises
        :class:`SettingsError` naming the variable when it holds none.

        >>> Settings(write_keys="k1, k2").secrets("write_keys")
        ('k1', 'k2')
        """
        value = getattr(self, name)
        found = tuple(part.strip() for part in value.get_secret_value().split(",") if part.strip())
        if not found and not self.dev_mode:
            raise SettingsError(
                f"{ENV_PREFIX}{name.upper()} is empty: set at least one "
                f"(or {ENV_PREFIX}DEV_MODE=true on a development machine)"
            )
        return found

    def admins(self) -> dict[str, str]:
        """The admin tokens by name.

        >>> Settings(admin_tokens="ann:s3cret, bob:t0ken").admins()
        {'ann': 's3cret', 'bob': 't0ken'}
        """
        pairs = self.admin_tokens.get_secret_value().split(",")
        return {
            name.strip(): token.strip()
            for name, _, token in (pair.partition(":") for pair in pairs if pair.strip())
        }

    def environment(self) -> dict[str, str]:
        """The `SEGSTREAM_*` variables that give a child process these settings (secrets
        revealed, unset optional paths left out).

        >>> Settings(partitions=8, write_keys="k1").environment()["SEGSTREAM_WRITE_KEYS"]
        'k1'
        """
        found = {}
        for name, value in self.model_dump().items():
            if value is not None:
                shown = value.get_secret_value() if isinstance(value, SecretStr) else value
                found[f"{ENV_PREFIX}{name.upper()}"] = str(shown)
        return found

    def privacy(self) -> PrivacyPolicy:
        """What happens to personal data in events, from these settings.

        >>> sorted(Settings(pii_properties="Email, phone").privacy().fields)
        ['email', 'phone']
        """
        from processors.privacy import PrivacyPolicy

        names = frozenset(part.strip().lower() for part in self.pii_properties.split(","))
        return PrivacyPolicy(names - {""}, self.pii_action)

    def trainer_config(self) -> TrainerConfig:
        """How the trainer learns, from these settings."""
        from processors.training import TrainerConfig  # numpy, River and scikit-learn: load late

        return TrainerConfig(
            k_min=self.cluster_k_min,
            k_max=self.cluster_k_max,
            min_share=self.cluster_min_share,
            sample_size=self.sample_users,
            min_samples=self.cluster_min_users,
            min_events=self.cold_start_events,
            drift_delta=self.drift_delta,
            recluster_seconds=self.recluster_seconds,
        )

    def __init__(self, **values: Any) -> None:
        unknown = sorted(
            name
            for name in os.environ
            if name.startswith(ENV_PREFIX)
            and name[len(ENV_PREFIX) :].lower() not in type(self).model_fields
        )
        if unknown:
            raise SettingsError("\n".join(f"unknown setting {name}" for name in unknown))
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise SettingsError(_describe(error)) from None


def settings_table() -> str:
    """The settings as a Markdown table, as the README shows them."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = "the shipped rules" if field.default_factory else f"`{field.default}`"
        if isinstance(field.default, SecretStr):
            default = "none"
        meaning = " ".join((field.description or "").split())
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {default} | {meaning} |")
    return "\n".join(rows)


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors(include_url=False):
        if not problem["loc"]:
            lines.append(f"invalid settings: {problem['msg']}")
            continue
        name = ENV_PREFIX + "_".join(str(part) for part in problem["loc"]).upper()
        value = problem.get("input")
        shown = f"={value}" if isinstance(value, str | int | float) else ""
        lines.append(f"invalid setting {name}{shown}: {problem['msg']}")
    return "\n".join(lines)
