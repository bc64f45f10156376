"""What segstream sends itself on the events topic: header names, kinds and bodies.

Besides tracker events, the events topic carries:

- control commands, marked by :data:`CONTROL_HEADER`: :data:`ADVANCE_WATERMARK`
  (body `{"until": epoch_seconds}`, sent by `segstream replay --until` to each
  partition) and :data:`ERASE` (keyed by the user to forget, sent by the read API);
- relays, marked by :data:`RELAY_HEADER` with their kind and by
  :data:`SOURCE_HEADER` with the `partition:offset:index` that caused them
  (the index counts the relays one message caused): a partition applies each
  source's relays once, in that order. Kinds:
  `merge` (body: the user an anonymous id now is), `absorb` (msgpack
  `[source id, state]`), `forward` (an event for a merged id, keyed by its
  user), `erase` (body `follow` to erase the user an alias points to) and
  `route` (an event that arrived on another partition than its user's; it is
  judged where it lands, with its own headers kept);
- replayed events, marked by :data:`REPLAY_HEADER`.

>>> advance_until(advance_body(1_700_000_000.5))
1700000000.5
>>> message = RelayMessage.of(Relay("merge", "ann", b"bob"), source=3, offset=41)
>>> message.headers()
[('segstream-relay', b'merge'), ('segstream-source', b'3:41:0')]
>>> source_of(dict(message.headers()))
(3, 41, 0)
>>> relayed_item(b"merge", "ann", b"bob", max_bytes=1024)
Merge(anonymous_id='ann', into='bob')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import msgpack
import orjson

from processors._core import Relay
from processors.events import NOTHING, Action, Projection, Rejection, decode_event

CONTROL_HEADER = "segstream-control"
"""Header marking a control message on the events topic; its value names the command."""
ADVANCE_WATERMARK = b"advance-watermark"
"""Control command: the JSON body `{"until": epoch_seconds}` advances the partition's watermark."""
ERASE = b"erase"
"""Control command: forget the user the message is keyed by (see `DELETE /v1/users/{id}`)."""
RELAY_HEADER = "segstream-relay"
"""Header of a message the pipeline relays to itself; its value is the relay's kind."""
SOURCE_HEADER = "segstream-source"
"""`partition:offset:index` of the message a relay was caused by, and which of the relays it
caused this is; relays apply once per source. (`partition:offset` reads as index 0.)"""
REPLAY_HEADER = "segstream-replay"
"""Header of an event replayed from history: its partition's watermark keeps to event time."""
ROUTE = b"route"
"""Relay kind of an event forwarded to its user's partition; it is judged there as if it had
arrived there (lateness, watermark), with its original headers and body."""

MODEL_KEY = b"model"
"""The one key of the compacted models topic: only the latest snapshot matters."""

Headers = list[tuple[str, str | bytes | None]]
"""Headers as confluent-kafka takes them."""


@dataclass(frozen=True, slots=True)
class Merge:
    """The id `anonymous_id` (whose events arrive on this partition) is the user `into`: its
    state becomes a tombstone pointing there, and its aggregates travel on as an :class:`Absorb`."""

    anonymous_id: str
    into: str


@dataclass(frozen=True, slots=True)
class Absorb:
    """The aggregates of `source_id`, as a state row, to add to user `into`."""

    source_id: str
    into: str
    state: bytes


@dataclass(frozen=True, slots=True)
class Advance:
    """The partition's watermark moves to `until` (epoch seconds): the timers due by then fire,
    and every user of the partition is evaluated as of then."""

    until: float


@dataclass(frozen=True, slots=True)
class Erase:
    """Forget `user_id`; with `follow`, also the user it is an alias of and the ids linked."""

    user_id: str
    follow: bool = True


Item = Action | Merge | Absorb | Advance | Erase
"""What a partition step takes, in offset order (see :func:`processors._core.run_partition`)."""


def advance_body(until: float) -> bytes:
    """The body of an advance-watermark command."""
    return orjson.dumps({"until": until})


def advance_until(body: bytes | None) -> float | None:
    """The `until` of an advance-watermark command, or `None` when the body is not one."""
    try:
        until = orjson.loads(body or b"")["until"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return float(until) if isinstance(until, int | float) and not isinstance(until, bool) else None


def header_map(headers: Iterable[object] | None) -> dict[str, bytes]:
    """A message's headers by name, values as bytes (confluent-kafka gives a list of pairs).

    >>> header_map([("a", "x"), ("b", None), ("c", b"y")])
    {'a': b'x', 'b': b'', 'c': b'y'}
    """
    found: dict[str, bytes] = {}
    for header in headers or ():
        if isinstance(header, tuple):
            name, value = header
            if type(value) is not bytes:
                value = value.encode() if isinstance(value, str) else bytes(value or b"")
            found[str(name)] = value
    return found


Source = tuple[int, int, int]
"""Where a relay comes from: the causing message's partition and offset, and its index among
the relays that message caused."""


def source_of(headers: Mapping[str, bytes]) -> Source | None:
    """The `(partition, offset, index)` a relayed message was caused by; `None` when it has
    none."""
    try:
        parts = [int(part) for part in headers[SOURCE_HEADER].split(b":")]
    except (KeyError, ValueError):
        return None
    if len(parts) == 2:
        parts.append(0)
    if len(parts) != 3:
        return None
    partition, offset, index = parts
    return partition, offset, index


@dataclass(frozen=True, slots=True)
class RelayMessage:
    """A message relayed to the events topic, caused by `source`:`offset`."""

    source: int
    offset: int
    key: bytes
    value: bytes | None
    kind: bytes
    partition: int = -1
    """Where it goes; -1: the key's canonical partition (the producer's partitioner)."""
    kept: tuple[tuple[str, bytes], ...] = ()
    """Headers of the original message that travel with it."""
    index: int = 0
    """Which of the relays its cause caused it is (:func:`in_cause_order` numbers them)."""

    @classmethod
    def of(
        cls,
        relay: Relay,
        *,
        source: int,
        offset: int,
        cause_key: bytes | None = None,
        cause_value: bytes | None = None,
    ) -> RelayMessage:
        """The message for a partition step's `relay`, caused by the message at
        `source`:`offset` (whose key and value a forward and an absorb carry on)."""
        body = relay.body
        if relay.kind == "forward":
            body = cause_value or b""
        elif relay.kind == "absorb":
            body = msgpack.packb([(cause_key or b"").decode(), relay.body])
        return cls(source, offset, relay.key.encode(), body, relay.kind.encode())

    @classmethod
    def route(
        cls,
        user_id: str,
        to: int,
        *,
        source: int,
        offset: int,
        value: bytes | None,
        headers: Mapping[str, bytes],
    ) -> RelayMessage:
        """An event that arrived on `source`, forwarded to its user's partition `to`."""
        return cls(source, offset, user_id.encode(), value, ROUTE, to, tuple(headers.items()))

    def headers(self) -> Headers:
        """Its headers: the kept ones, its kind, and its cause."""
        cause = f"{self.source}:{self.offset}:{self.index}".encode()
        return [*self.kept, (RELAY_HEADER, self.kind), (SOURCE_HEADER, cause)]


def in_cause_order(messages: Iterable[RelayMessage]) -> list[RelayMessage]:
    """`messages` in the order of the offsets that caused them, numbered within each cause: a
    partition applies one source's relays in that order, and takes a relay at or below one
    it has applied for a copy it has seen."""
    ordered = sorted(messages, key=lambda message: (message.source, message.offset))
    numbered: list[RelayMessage] = []
    for message in ordered:
        index = 0
        if numbered and (numbered[-1].source, numbered[-1].offset) == (
            message.source,
            message.offset,
        ):
            index = numbered[-1].index + 1
        numbered.append(replace(message, index=index))
    return numbered


def relayed_item(
    kind: bytes, key: str, body: bytes, *, max_bytes: int, keep: Projection = NOTHING
) -> Item | Rejection:
    """The item a relayed `merge`, `absorb`, `erase` or `forward` carries; a forwarded event
    keeps what `keep` says."""
    if kind == b"erase":
        return Erase(key, follow=body == b"follow")
    if kind == b"merge":
        return Merge(anonymous_id=key, into=body.decode())
    if kind == b"absorb":
        source_id, state = msgpack.unpackb(body)
        return Absorb(source_id=source_id, into=key, state=state)
    action = decode_event(body, max_bytes=max_bytes, keep=keep)
    if isinstance(action, Action):
        return action.for_user(key)  # forwarded to the user the id it was sent under belongs to
    return action
