"""Generations: users' state rebuilt from the events topic's history for new rules.

`segstream rules apply FILE --backfill` publishes a :class:`Build` under the rules
topic's `build` key: the next generation's number, and the new rules' version and
text. Every worker then builds that generation beside the one it serves, for the
partitions it owns, from their earliest retained offsets, under the generation's
own keys (:meth:`state.keys.KeyLayout.of_generation`) and progress
(:mod:`streams.worker.builder`). A later build replaces an earlier one.

When every partition of the build is within :data:`SWITCH_LAG` messages of the
topic's end, a worker publishes the new rules as served from the new generation
(:func:`publish_switch`); each worker then takes its partitions over
(:mod:`streams.worker.adoption`), and the read API and commands read the new keys.

>>> build = Build(2, 7, "segments: []", 1.5)
>>> Build.from_json(build.to_json()) == build
True
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in its __all__
    ConfigResource,
    ResourceType,
)

from processors.rule_cost import state_bytes
from processors.rules import RuleFileError, RuleSet, parse_rules
from state.redis_store import RedisStateStore
from state.rules_history import Published, record
from streams.compacted_feed import CompactedFeed
from streams.compacted_feed import publish as publish_value
from streams.kafka import admin_client, topic_reader
from streams.redis_clients import redis_client
from streams.rules_feed import RULES_KEY, InForce, Publication, cli_publisher
from streams.settings import Settings

log = logging.getLogger(__name__)

BUILD_KEY = b"build"
"""The rules topic's key for the generation being built."""
SWITCH_LAG = 1_000
"""Messages a partition may have left to build when the generation becomes current: the
workers build the rest while they switch."""


@dataclass(frozen=True, slots=True)
class Build:
    """Generation `generation`, being built for rules `version` (`text`) since `started_at`;
    `partial` names the segments that read further back than the topic still holds."""

    generation: int
    version: int
    text: str
    started_at: float
    partial: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        """The message value."""
        return orjson.dumps(
            {
                "generation": self.generation,
                "version": self.version,
                "text": self.text,
                "started_at": self.started_at,
                "partial": self.partial,
            }
        )

    @classmethod
    def from_json(cls, value: bytes) -> Build:
        """Inverse of :meth:`to_json`; raises `ValueError` when the value is not one."""
        try:
            body = orjson.loads(value)
            return cls(
                int(body["generation"]),
                int(body["version"]),
                str(body["text"]),
                float(body["started_at"]),
                tuple(str(name) for name in body.get("partial", ())),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a build: {error}") from None

    def rules(self) -> RuleSet:
        """The rules the generation is built for; raises `RuleFileError` when invalid."""
        return parse_rules(self.text, source=f"rules v{self.version}", version=self.version)


def start_build(
    settings: Settings, text: str, source: str, partial: tuple[str, ...] = (), by: str = ""
) -> Build:
    """Validate `text` and publish a build of the next generation for it as the next rules
    version (`partial`: its segments that cannot be exact), noting `by` in the rules
    history as `publish` does; raises `RuleFileError`."""
    parse_rules(text, source=source)
    keys = settings.key_layout()
    client = redis_client(settings)
    try:
        generation = int(client.incr(keys.generations))
        version = int(client.incr(keys.rules_version))
        entry = Published(version, time.time(), by or cli_publisher(), "backfill", text)
        record(client, keys, entry)
    finally:
        client.close()
    build = Build(generation, version, text, time.time(), partial)
    publish_value(
        settings, settings.rules_topic, BUILD_KEY, build.to_json(), f"generation {generation}"
    )
    return build


def publish_switch(settings: Settings, build: Build, replaces: int) -> None:
    """Make `build`'s generation current, serving its rules, in place of `replaces`."""
    publication = Publication(
        build.version, build.text, False, time.time(), build.generation, replaces, build.partial
    )
    what = f"rules v{build.version} from generation {build.generation}"
    publish_value(settings, settings.rules_topic, RULES_KEY, publication.to_json(), what)


class BuildFeed(CompactedFeed[Build]):
    """Follows the rules topic's builds: each one of a later generation than the last."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.rules_topic, BUILD_KEY)
        self.generation = 0

    def accept(self, value: bytes) -> Build | None:
        """The build `value` publishes, if of a later generation and its rules are valid."""
        try:
            build = Build.from_json(value)
            if build.generation <= self.generation:
                return None
            build.rules()
        except (ValueError, RuleFileError) as error:
            log.error("build refused: %s", error)
            return None
        self.generation = build.generation
        return build


@dataclass(frozen=True, slots=True)
class Retained:
    """What the events topic still holds: its `retention_ms` (`None`: forever), the event
    time of its earliest retained event (`None`: no event), and whether it has lost any
    (a partition's first offset above 0)."""

    retention_ms: int | None
    earliest_event: float | None
    lost_any: bool

    def reach(self, now: float) -> float:
        """How far back from `now` the topic holds every event, and will hold as its
        retention goes on deleting (`inf`: the whole history)."""
        if not self.lost_any:
            return math.inf
        keeps = math.inf if self.retention_ms is None else self.retention_ms / 1000
        return min(keeps, now - (self.earliest_event if self.earliest_event is not None else now))

    def problem(self, needed: float, now: float) -> str | None:
        """Why a rebuild of rules that read `needed` seconds back (with the allowed
        lateness) cannot be exact as of `now`; `None` when it can.

        >>> Retained(None, 100.0, lost_any=False).problem(float("inf"), 1e9) is None
        True
        >>> print(Retained(604_800_000, 1e9 - 86_400, lost_any=True).problem(30 * 86_400, 1e9))
        retention.ms is 604800000 (7 days) and the earliest retained event is from \
2001-09-08T01:46:40Z: the rules read 30 days back
        """
        if not self.lost_any or self.reach(now) >= needed:
            return None
        keeps = math.inf if self.retention_ms is None else self.retention_ms / 1000
        kept = "forever" if self.retention_ms is None else f"{keeps / 86_400:g} days"
        earliest = "none" if self.earliest_event is None else iso_text(self.earliest_event)
        wanted = "their whole history" if needed == math.inf else f"{_span(needed)} back"
        return (
            f"retention.ms is {self.retention_ms if self.retention_ms is not None else -1} "
            f"({kept}) and the earliest retained event is from {earliest}: the rules read "
            f"{wanted}"
        )


def _span(seconds: float) -> str:
    """Whole days and the hours beyond: `31 days 1 h`, `7 days`."""
    days, rest = divmod(seconds, 86_400)
    hours = f" {rest / 3_600:g} h" if rest else ""
    return f"{days:.0f} days{hours}"


def iso_text(moment: float) -> str:
    """An epoch time in UTC, to the second: `2026-11-01T10:00:00Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def retained(settings: Settings) -> Retained:
    """Read the events topic's retention and its earliest retained event."""
    topic = settings.events_topic
    admin = admin_client(settings)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource], request_timeout=10)[resource].result()
    retention = int(configs["retention.ms"].value)
    reader = topic_reader(settings, f"{settings.group_id}-history")
    try:
        earliest: float | None = None
        lost_any = False
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        for number in partitions:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, number), 10)
            lost_any |= low > 0
            if high > low:
                moment = _first_event_time(reader, TopicPartition(topic, number, low))
                if moment is not None:
                    earliest = moment if earliest is None else min(earliest, moment)
    finally:
        reader.close()
    return Retained(None if retention < 0 else retention, earliest, lost_any)


def _first_event_time(reader: Consumer, first: TopicPartition) -> float | None:
    """The event time of the message at `first`: its `timestamp` (or the broker's time of
    the message when it has none that reads)."""
    reader.assign([first])
    try:
        for message in reader.consume(1, 10):
            if message.error() is not None:
                return None
            try:
                stamp = orjson.loads(message.value() or b"{}")["timestamp"]
                return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return message.timestamp()[1] / 1000
        return None
    finally:
        reader.unassign()


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a build is: messages built of the topic's `total`."""

    built: int
    total: int


def build_progress(settings: Settings, generation: int) -> Progress:
    """How many of the events topic's retained messages `generation` has built."""
    topic = settings.events_topic
    reader = topic_reader(settings, f"{settings.group_id}-progress")
    client = redis_client(settings)
    try:
        numbers = list(reader.list_topics(topic, timeout=10).topics[topic].partitions)
        keys = settings.key_layout().of_generation(generation)
        progress = RedisStateStore(client, keys, settings.group_id).progress(numbers)
        built = total = 0
        for number in numbers:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, number), 10)
            done = progress[number].offset if number in progress else low
            built += max(min(done, high) - low, 0)
            total += high - low
        return Progress(built, total)
    finally:
        reader.close()
        client.close()


@dataclass(frozen=True, slots=True)
class Footprint:
    """Redis for two generations at once: `users` now, the bytes of a user's state row in
    the generation served now (a sample's mean) and, at least, in the one to build."""

    users: int
    current: int
    built: int

    def text(self) -> str:
        """One line for the operator.

        >>> Footprint(100_000, 800, 1_900).text()
        'Redis while both generations exist: about 100,000 users of (800 + 1,900) bytes = 270 MB'
        """
        total = self.users * (self.current + self.built) / 1e6
        return (
            f"Redis while both generations exist: about {self.users:,} users of "
            f"({self.current:,} + {self.built:,}) bytes = {total:,.0f} MB"
        )


def footprint(settings: Settings, served: InForce, rules: RuleSet, sample: int = 50) -> Footprint:
    """What two generations take: the users and mean state row of the generation `served`
    (`sample` users a partition), and that row with what `rules`' new computed traits add at
    the least (one bucket each)."""
    keys = served.keys(settings)
    client = redis_client(settings)
    try:
        partitions = int(client.get(keys.partition_count) or settings.partitions)
        users = sizes = measured = 0
        for number in range(partitions):
            users += int(client.scard(keys.partition_users(number)))
            for member in client.srandmember(keys.partition_users(number), sample) or []:
                user_id = member.decode() if isinstance(member, bytes) else str(member)
                sizes += int(client.strlen(keys.state(number, user_id)))
                measured += 1
    finally:
        client.close()
    current = sizes // measured if measured else 0
    kept = {definition["key"] for definition in served.rules.computed}
    added = sum(
        state_bytes(definition) for definition in rules.computed if definition["key"] not in kept
    )
    return Footprint(users, current, current + added)
