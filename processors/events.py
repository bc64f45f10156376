"""Segment Spec events: validation and reduction to compact actions.

Trackers send Segment-style JSON (`track`, `page`, `screen`, `identify`,
`alias`, `group`). The compiled core (`processors/core/src/decoding.rs`, the
one definition of the event schema) validates raw messages and reduces each to
an :class:`Action`, the small record the rest of the pipeline works with, or to
a :class:`Rejection` naming why it cannot be used. A worker decodes a whole
batch in one call (:func:`decode_events`).

An :class:`Action`'s `user_id` is the profile the event belongs to: the
`userId` when known, otherwise the `anonymousId`. `timestamp` is event time in
epoch seconds. `value` is the order revenue for orders and price times quantity
for cart adds and removals, in the event's currency units; 0 otherwise.
`product` is the product's `product_id` (else `sku`, else `name`) on product
events.

>>> raw = (b'{"type": "track", "event": "Order Completed", "userId": "u1",'
...        b' "messageId": "m1", "timestamp": "2026-11-01T10:00:00Z",'
...        b' "properties": {"revenue": 42.5, "products": [{"category": "shoes"}]}}')
>>> action = decode_event(raw)
>>> action.kind.name, action.user_id, action.value, action.categories
('ORDER', 'u1', 42.5, ('shoes',))
>>> decode_event(b'{"type": "track", "event": ').reason
'invalid_json'
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import NamedTuple

from processors._core import Action, Rejection, decode_events

__all__ = [
    "MAX_EVENT_BYTES",
    "Action",
    "EventKind",
    "Projection",
    "Reason",
    "Rejection",
    "decode_event",
]

MAX_EVENT_BYTES = 32 * 1024
"""Default size limit of one raw event, in bytes (Segment's own limit)."""


class EventKind(IntEnum):
    """What an event means for behaviour; the order fixes feature layouts."""

    PAGE = 0
    PRODUCT_VIEWED = 1
    SEARCH = 2
    CART_ADD = 3
    CART_REMOVE = 4
    CART_VIEWED = 5
    CHECKOUT = 6
    ORDER = 7
    OTHER = 8
    IDENTIFY = 9
    ALIAS = 10


class Reason:
    """Dead-letter reasons: stable codes carried in the `reason` header."""

    INVALID_JSON = "invalid_json"
    INVALID_SCHEMA = "invalid_schema"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_ID = "missing_id"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_REVENUE = "invalid_revenue"
    INVALID_PROPERTIES = "invalid_properties"
    OVERSIZED = "oversized"
    LATE = "late"
    """Older than its partition's watermark (judged by the worker)."""
    FUTURE = "future_timestamp"
    """Stamped further past the wall clock than allowed (judged by the worker)."""
    INVALID_CONTROL = "invalid_control"
    """A control command or relay the worker cannot read."""


class Projection(NamedTuple):
    """What the decoder keeps beyond the built-in features, from what the rules read.

    `traits`: the identify traits kept (their names, or `True` for every one);
    `events`: the `track` event and `page`/`screen` names whose calls the rules
    count (`True`: every one); `properties`: the dotted paths kept from those
    calls (`properties.plan.tier`, `name`).
    """

    traits: Sequence[str] | bool = ()
    events: Sequence[str] | bool = ()
    properties: Sequence[str] = ()


NOTHING = Projection()
"""Keeps nothing beyond the built-in features."""


def decode_event(
    raw: bytes, *, max_bytes: int = MAX_EVENT_BYTES, keep: Projection = NOTHING
) -> Action | Rejection:
    """Validate one raw Segment message and reduce it to an :class:`Action`.

    Returns a :class:`Rejection` instead of raising, so a caller can route the
    original bytes to a dead-letter topic with the reason.

    >>> decode_event(b'{"type": "page", "anonymousId": "a1",'
    ...              b' "timestamp": "2026-11-01T10:00:00+01:00"}').timestamp
    1793523600.0
    >>> decode_event(b'{"type": "page", "timestamp": "2026-11-01T10:00:00Z"}').reason
    'missing_id'
    >>> decode_event(b'{"type": "identify", "userId": "ann", "timestamp": "2026-11-01T10:00:00Z",'
    ...              b' "traits": {"plan": "pro", "email": "ann@example.com"}}',
    ...              keep=Projection(traits=["plan"])).traits
    {'plan': 'pro'}
    """
    return decode_all([raw], max_bytes=max_bytes, keep=keep)[0]


def decode_all(
    raws: Sequence[bytes], *, max_bytes: int = MAX_EVENT_BYTES, keep: Projection = NOTHING
) -> list[Action | Rejection]:
    """:func:`decode_event` for many messages, in one call to the core."""
    return decode_events(list(raws), max_bytes, keep=keep)
