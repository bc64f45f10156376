"""Rules published to the compacted rules topic, and the workers' view of them.

`segstream rules apply FILE` validates a rule file and publishes it with the
next version number; every worker follows the topic and switches to a new
version at its next batch. A publication that does not parse is refused and
the running rules stay in force.
"""

from __future__ import annotations

import getpass
import logging
import time
from dataclasses import dataclass

import orjson

from processors.rules import RuleFileError, RuleSet, parse_rules
from state.keys import KeyLayout
from state.rules_history import Mode, Published, record
from streams.compacted_feed import CompactedFeed
from streams.compacted_feed import publish as publish_value
from streams.redis_clients import redis_client
from streams.settings import Settings

log = logging.getLogger(__name__)


def load_rules(settings: Settings) -> RuleSet:
    """The rules in `settings.rules_file`, what a worker starts with until rules are published;
    raises `RuleFileError` when invalid."""
    path = settings.rules_file
    return parse_rules(path.read_text(encoding="utf-8"), source=str(path))


def in_force(settings: Settings) -> InForce:
    """The newest valid rules published on the rules topic, else `settings.rules_file`
    (served from generation 0)."""
    feed = RulesFeed(settings)
    try:
        published = feed.catch_up()
    finally:
        feed.close()
    return published if published is not None else InForce(load_rules(settings))


@dataclass(frozen=True, slots=True)
class InForce:
    """Rules in force, whether to re-evaluate every user with them at once, and the
    generation of users' state that serves them (with the one it replaced, if any)."""

    rules: RuleSet
    reevaluate: bool = False
    generation: int = 0
    replaces: int | None = None
    partial: tuple[str, ...] = ()
    """Segments that read further back than the events topic held when the generation was
    built (`rules apply --backfill --accept-partial-history`)."""

    def keys(self, settings: Settings) -> KeyLayout:
        """The Redis keys of the state that serves these rules."""
        return settings.key_layout().of_generation(self.generation)


RULES_KEY = b"rules"
"""The one key of the compacted rules topic: only the latest publication matters."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One published version of the rules.

    `generation` is the state the rules are served from, `replaces` the one served
    before when the publication switched to a rebuilt one (see `streams.generations`).

    >>> Publication.from_json(Publication(3, "segments: []", True, 1.5).to_json())
    Publication(version=3, text='segments: []', reevaluate=True, published_at=1.5, \
generation=0, replaces=None, partial=())
    """

    version: int
    text: str
    reevaluate: bool
    published_at: float
    generation: int = 0
    replaces: int | None = None
    partial: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        """The message value."""
        return orjson.dumps(
            {
                "version": self.version,
                "text": self.text,
                "reevaluate": self.reevaluate,
                "published_at": self.published_at,
                "generation": self.generation,
                "replaces": self.replaces,
                "partial": self.partial,
            }
        )

    @classmethod
    def from_json(cls, value: bytes) -> Publication:
        """Inverse of :meth:`to_json`; raises `ValueError` when the value is not one."""
        try:
            body = orjson.loads(value)
            return cls(
                int(body["version"]),
                str(body["text"]),
                bool(body["reevaluate"]),
                float(body["published_at"]),
                int(body.get("generation", 0)),
                None if body.get("replaces") is None else int(body["replaces"]),
                tuple(str(name) for name in body.get("partial", ())),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a rules publication: {error}") from None

    def rules(self) -> RuleSet:
        """The rule set; raises `RuleFileError` when the text does not validate."""
        return parse_rules(self.text, source=f"rules v{self.version}", version=self.version)


def publish(
    settings: Settings, text: str, source: str, *, reevaluate: bool, by: str = ""
) -> RuleSet:
    """Validate `text` and publish it as the next version, served from the generation that
    serves the rules in force, noting `by` (the publisher, :func:`cli_publisher` when
    empty) in the rules history; raises `RuleFileError`."""
    rules = parse_rules(text, source=source)
    current = in_force(settings)
    client = redis_client(settings)
    keys = settings.key_layout()
    try:
        version = int(client.incr(keys.rules_version))
        mode: Mode = "reevaluate" if reevaluate else "as users act"
        record(client, keys, Published(version, time.time(), by or cli_publisher(), mode, text))
    finally:
        client.close()
    partial = tuple(name for name in current.partial if name in rules.names)
    publication = Publication(
        version, text, reevaluate, time.time(), current.generation, current.replaces, partial
    )
    publish_value(
        settings, settings.rules_topic, RULES_KEY, publication.to_json(), f"rules v{version}"
    )
    return publication.rules()


def cli_publisher() -> str:
    """Who publishes from the command line: `cli:` and the login name."""
    return f"cli:{getpass.getuser()}"


class RulesFeed(CompactedFeed[InForce]):
    """Follows the rules topic: newer valid versions, whether to re-evaluate with them, and
    their generation."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.rules_topic, RULES_KEY)
        self.version = 0

    def accept(self, value: bytes) -> InForce | None:
        """The rules `value` publishes, if newer than the version in force and valid."""
        try:
            publication = Publication.from_json(value)
            if publication.version <= self.version:
                return None
            rules = publication.rules()
        except (ValueError, RuleFileError) as error:
            log.error("rules refused, the running rules stay in force: %s", error)
            return None
        self.version = publication.version
        return InForce(
            rules,
            publication.reevaluate,
            publication.generation,
            publication.replaces,
            publication.partial,
        )
