"""Destination files published to the compacted destinations topic, and the deliverers'
view of them.

`segstream destinations apply FILE` validates a destination file and publishes
it; every deliverer follows the topic and switches to the newest valid file
within a second, without a restart. Until anything is published, deliverers use
`SEGSTREAM_DESTINATIONS_FILE`. A publication a deliverer cannot use (invalid, or
naming a `secret_env` unset in the deliverer's environment) is refused with a
logged error and the destinations in force stay.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson

from processors.destinations import (
    Destination,
    DestinationFileError,
    MissingSecretError,
    parse_destinations,
)
from streams.compacted_feed import CompactedFeed
from streams.compacted_feed import publish as publish_value
from streams.settings import Settings

log = logging.getLogger(__name__)

DESTINATIONS_KEY = b"destinations"
"""The one key of the compacted destinations topic: only the latest file matters."""


@dataclass(frozen=True, slots=True)
class Configured:
    """Destinations in force with the secret each signs with."""

    destinations: tuple[Destination, ...]
    secrets: tuple[str, ...]
    source: str

    @classmethod
    def parse(cls, text: str, source: str) -> Configured:
        """Validate `text` and look up each secret; raises `DestinationFileError`, or
        `MissingSecretError` naming an unset `secret_env`.

        >>> Configured.parse("destinations: []", "empty.yaml").source
        'empty.yaml'
        """
        destinations = tuple(parse_destinations(text, source=source))
        secrets = tuple(destination.signing_secret() for destination in destinations)
        return cls(destinations, secrets, source)

    def by_name(self) -> dict[str, tuple[Destination, str]]:
        """Each destination with its secret, by name."""
        return {
            d.name: (d, secret) for d, secret in zip(self.destinations, self.secrets, strict=True)
        }


def publish(settings: Settings, text: str, source: str) -> list[Destination]:
    """Validate `text` and publish it; raises `DestinationFileError`."""
    destinations = parse_destinations(text, source=source)
    value = orjson.dumps({"text": text, "source": source, "published_at": time.time()})
    publish_value(settings, settings.destinations_topic, DESTINATIONS_KEY, value, source)
    return destinations


class DestinationsFeed(CompactedFeed[Configured]):
    """Follows the destinations topic: each valid publication, in the order published."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.destinations_topic)

    def accept(self, value: bytes) -> Configured | None:
        """The destinations `value` publishes, if the deliverer can use them."""
        try:
            body = orjson.loads(value)
            moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(body["published_at"]))
            return Configured.parse(str(body["text"]), f"{body['source']} (applied {moment})")
        except (
            orjson.JSONDecodeError,
            KeyError,
            TypeError,
            DestinationFileError,
            MissingSecretError,
        ) as error:
            log.error("destinations refused, those in force stay: %s", error)
            return None
