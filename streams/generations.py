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
import time
from dataclasses import dataclass

import orjson

from processors.rules import RuleFileError, RuleSet, parse_rules
from streams.compacted_feed import CompactedFeed
from streams.compacted_feed import publish as publish_value
from streams.redis_clients import redis_client
from streams.rules_feed import RULES_KEY, Publication
from streams.settings import Settings

log = logging.getLogger(__name__)

BUILD_KEY = b"build"
"""The rules topic's key for the generation being built."""
SWITCH_LAG = 1_000
"""Messages a partition may have left to build when the generation becomes current: the
workers build the rest while they switch."""


@dataclass(frozen=True, slots=True)
class Build:
    """Generation `generation`, being built for rules `version` (`text`) since `started_at`."""

    generation: int
    version: int
    text: str
    started_at: float

    def to_json(self) -> bytes:
        """The message value."""
        return orjson.dumps(
            {
                "generation": self.generation,
                "version": self.version,
                "text": self.text,
                "started_at": self.started_at,
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
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a build: {error}") from None

    def rules(self) -> RuleSet:
        """The rules the generation is built for; raises `RuleFileError` when invalid."""
        return parse_rules(self.text, source=f"rules v{self.version}", version=self.version)


def start_build(settings: Settings, text: str, source: str) -> Build:
    """Validate `text` and publish a build of the next generation for it as the next rules
    version; raises `RuleFileError`."""
    parse_rules(text, source=source)
    keys = settings.key_layout()
    client = redis_client(settings)
    try:
        generation = int(client.incr(keys.generations))
        version = int(client.incr(keys.rules_version))
    finally:
        client.close()
    build = Build(generation, version, text, time.time())
    publish_value(
        settings, settings.rules_topic, BUILD_KEY, build.to_json(), f"generation {generation}"
    )
    return build


def publish_switch(settings: Settings, build: Build, replaces: int) -> None:
    """Make `build`'s generation current, serving its rules, in place of `replaces`."""
    publication = Publication(
        build.version, build.text, False, time.time(), build.generation, replaces
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
