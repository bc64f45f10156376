"""Webhook destinations of segment changes: the YAML file that lists them, which changes
each takes, and the signed request (Standard Webhooks) that carries them.

A destination file is a mapping with one key, `destinations`, a list; each has a
`name`, a `url`, a `secret` (`whsec_…`) or `secret_env` naming the environment
variable that holds it, and optional filters (`segments`, `directions`,
`reasons`) and delivery options (`timeout`, `max_attempts`, `batch`, `start`).
:func:`parse_destinations` reports every error with its line and field.

>>> destinations = parse_destinations('''
... destinations:
...   - name: reminders
...     url: https://hooks.example.com/segstream
...     secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
...     segments: [Cart Abandoners]
...     directions: [entered]
... ''')
>>> reminders = destinations[0]
>>> reminders.matches({"entered": ["Cart Abandoners"], "exited": [], "reason": "time"})
True
>>> reminders.matches({"entered": [], "exited": ["Cart Abandoners"], "reason": "event"})
False
>>> parse_destinations("destinations:\\n  - name: x\\n    url: ftp://nope\\n")
Traceback (most recent call last):
...
processors.destinations.DestinationFileError: destinations: 1 error(s)
  line 3, destinations[0].url: URL scheme should be 'http' or 'https'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from standardwebhooks import Webhook

from processors.classifier import ChangeReason
from processors.yaml_files import FileError, Problem, load_yaml, problems

Direction = Literal["entered", "exited"]

EVENT_TYPE = "segment.changed"
"""The `type` of every webhook body segstream sends."""


class DestinationFileError(FileError):
    """A destination file that cannot be used; `errors` lists every problem."""


class MissingSecretError(LookupError):
    """A destination's `secret_env` names a variable the process does not have."""


class Destination(BaseModel):
    """One receiver of segment changes, and which changes it takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    url: AnyHttpUrl
    secret: str | None = None
    """The signing secret, `whsec_` and base64."""
    secret_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The environment variable holding the signing secret, read when delivering."""
    segments: tuple[str, ...] = ()
    """Segment names or cluster ids; a change matches when it enters or exits one (empty:
    every change)."""
    directions: tuple[Direction, ...] = ("entered", "exited")
    reasons: tuple[ChangeReason, ...] = ()
    """Change reasons taken (`event`, `late`, `time`, `merge`, `expired`, `erased`, `rules`,
    `model`, `drift`; empty: all). A destination that takes `time` should take `late` too:
    a late event's change corrects what a timer announced."""
    timeout: float = Field(10.0, gt=0, le=120)
    """Seconds to wait for the receiver's answer."""
    max_attempts: int = Field(12, ge=1, le=1_000)
    """Attempts before a change goes to the dead-letter topic; with the default backoff, 12
    attempts span 90 s to 3 minutes."""
    batch: int = Field(1, ge=1, le=1_000)
    """Changes per request; above 1, `data` is a list."""
    start: Literal["earliest", "latest"] = "earliest"
    """Where a destination new to the deliverers begins: the oldest change the change topic
    keeps, or the changes from when it is first delivered to."""

    @field_validator("secret")
    @classmethod
    def _secret_form(cls, value: str | None) -> str | None:
        if value is not None:
            _secret_bytes(value)
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> Destination:
        if (self.secret is None) == (self.secret_env is None):
            raise PydanticCustomError(
                "secret", "give `secret` (whsec_…) or `secret_env`, one of them"
            )
        return self

    def signing_secret(self, environment: Mapping[str, str] = os.environ) -> str:
        """The secret requests are signed with; raises `MissingSecretError` naming an unset
        variable."""
        if self.secret is not None:
            return self.secret
        assert self.secret_env is not None
        value = environment.get(self.secret_env)
        if value is None:
            raise MissingSecretError(f"{self.secret_env} is not set (the secret of {self.name!r})")
        _secret_bytes(value)
        return value

    def matches(self, change: Mapping[str, Any]) -> bool:
        """Whether `change` (as on the change topic) is one this destination takes; a move
        from one cluster to another enters the new cluster id and exits the old one.

        >>> anyone = Destination(name="all", url="https://h.example", secret_env="S")
        >>> anyone.matches({"entered": [], "exited": [], "cluster": "c2", "previous_cluster": "c1"})
        True
        >>> anyone.model_copy(update={"segments": ("c1",), "directions": ("entered",)}).matches(
        ...     {"entered": [], "exited": [], "cluster": "c2", "previous_cluster": "c1"})
        False
        """
        if self.reasons and change.get("reason") not in self.reasons:
            return False
        moved = moves(change)
        taken = [moved[direction] for direction in self.directions]
        if not self.segments:
            return any(taken)
        wanted = set(self.segments)
        return any(wanted.intersection(names) for names in taken)


def moves(change: Mapping[str, Any]) -> dict[Direction, list[str]]:
    """The segments and cluster ids `change` enters and exits.

    >>> moves({"entered": ["A"], "exited": [], "cluster": "c1", "previous_cluster": None})
    {'entered': ['A', 'c1'], 'exited': []}
    """
    entered = list(change.get("entered") or [])
    exited = list(change.get("exited") or [])
    cluster, previous = change.get("cluster"), change.get("previous_cluster")
    if cluster != previous:
        if cluster is not None:
            entered.append(cluster)
        if previous is not None:
            exited.append(previous)
    return {"entered": entered, "exited": exited}


class DestinationFile(BaseModel):
    """The whole file: its destinations, each name once."""

    model_config = ConfigDict(extra="forbid")

    destinations: list[Destination]


_SHAPE = "a destinations file is a mapping with a `destinations:` list (see docs/webhooks.md)"


def parse_destinations(text: str, source: str = "destinations") -> list[Destination]:
    """Validate destination-file text; raise :class:`DestinationFileError` on any problem."""
    document, lines = load_yaml(text, source, DestinationFileError, _SHAPE)
    try:
        parsed = DestinationFile.model_validate(document)
    except ValidationError as error:
        raise DestinationFileError(source, problems(error, lines)) from None
    seen: set[str] = set()
    duplicates = []
    for index, destination in enumerate(parsed.destinations):
        if destination.name in seen:
            line = lines.get(("destinations", index, "name"))
            duplicates.append(
                Problem(line, f"destinations[{index}].name", f"duplicate name {destination.name!r}")
            )
        seen.add(destination.name)
    if duplicates:
        raise DestinationFileError(source, duplicates)
    return parsed.destinations


CLUSTER_ID = re.compile(r"c\d+")
"""How the clustering model names its clusters (`c0`, `c1`, ...)."""


def unknown_segments(destinations: Sequence[Destination], names: Sequence[str]) -> list[str]:
    """What a destination filters on that neither a segment in `names` nor a cluster id is:
    such a filter matches no change until rules with that segment are in force.

    >>> hooks = Destination(name="crm", url="https://x.example.com", secret="whsec_" + "A" * 32,
    ...                     segments=("Buyers", "Byers", "c3"))
    >>> unknown_segments([hooks], ["Buyers"])
    ["destination 'crm' filters on 'Byers', which the rules in force do not have"]
    """
    return [
        f"destination {destination.name!r} filters on {name!r}, which the rules in force do "
        "not have"
        for destination in destinations
        for name in destination.segments
        if name not in names and not CLUSTER_ID.fullmatch(name)
    ]


def webhook_id(destination: str, changes: Sequence[Mapping[str, Any]]) -> str:
    """The `webhook-id` of a request: the same for the same changes at the same destination,
    so a receiver drops a redelivery.

    >>> webhook_id("crm", [{"user_id": "ann", "version": 3}])
    'msg_654bd6f5dd85d73c7feba3e70b6a0275'
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(destination.encode())
    for change in changes:
        digest.update(
            b"\0" + str(change["user_id"]).encode() + b"\0" + str(change["version"]).encode()
        )
    return f"msg_{digest.hexdigest()}"


def webhook_request(
    destination: Destination,
    changes: Sequence[Mapping[str, Any]],
    now: datetime,
    secret: str,
) -> tuple[dict[str, str], bytes]:
    """The headers and body of one signed request carrying `changes` (one, unless the
    destination batches), following the Standard Webhooks specification."""
    data: Any = changes[0] if destination.batch == 1 else list(changes)
    body = orjson.dumps(
        {"type": EVENT_TYPE, "timestamp": now.astimezone(UTC).isoformat(), "data": data}
    )
    identifier = webhook_id(destination.name, changes)
    signature = Webhook(secret).sign(identifier, now, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": identifier,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }, body


def _secret_bytes(secret: str) -> bytes:
    """The key in a `whsec_` secret; raises a validation error naming the expected form."""
    if not secret.startswith("whsec_"):
        raise PydanticCustomError("secret", "a secret starts with whsec_ (Standard Webhooks form)")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError("secret", "the part after whsec_ must be base64") from None
    if not 24 <= len(key) <= 64:
        raise PydanticCustomError("secret", "the key must be 24 to 64 bytes")
    return key
