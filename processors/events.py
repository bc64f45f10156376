"""Segment Spec events: validation and reduction to compact actions.

Trackers send Segment-style JSON (`track`, `page`, `screen`, `identify`,
`alias`, `group`). :func:`decode_event` validates one raw message with
pydantic and reduces it to an :class:`Action`, the small record the rest of the
pipeline works with, or to a :class:`Rejection` naming why it cannot be used.

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

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

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


TRACK_KINDS: dict[str, EventKind] = {
    "Product Viewed": EventKind.PRODUCT_VIEWED,
    "Products Searched": EventKind.SEARCH,
    "Product Added": EventKind.CART_ADD,
    "Product Removed": EventKind.CART_REMOVE,
    "Cart Viewed": EventKind.CART_VIEWED,
    "Checkout Started": EventKind.CHECKOUT,
    "Order Completed": EventKind.ORDER,
}
"""Segment e-commerce track event names that segstream understands."""


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


@dataclass(slots=True)
class Action:
    """One validated event reduced to what segmentation needs.

    `user_id` is the profile the event belongs to: the `userId` when known,
    otherwise the `anonymousId`. `timestamp` is event time in epoch seconds.
    `value` is the order revenue for orders and price times quantity for cart
    adds and removals, in the event's currency units; 0 otherwise. `product`
    is the product's `product_id` (else `sku`, else `name`) on product events.
    """

    user_id: str
    message_id: str
    kind: EventKind
    timestamp: float
    value: float = 0.0
    categories: tuple[str, ...] = ()
    device: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    product: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a raw event was refused: a :class:`Reason` code and a readable detail."""

    reason: str
    detail: str


_SCHEMA = ConfigDict(extra="ignore", populate_by_name=True, coerce_numbers_to_str=True)


class Device(BaseModel):
    """`context.device`; only the type (mobile, tablet, desktop, ...) is used."""

    model_config = _SCHEMA
    type: str | None = None


class Context(BaseModel):
    """The subset of Segment's `context` object that segstream reads."""

    model_config = _SCHEMA
    device: Device | None = None
    user_agent: str | None = Field(default=None, alias="userAgent")
    locale: str | None = None


class Properties(BaseModel):
    """The e-commerce properties segstream reads; any others are ignored.

    Kept loose here because a custom event may use these names freely; they
    are checked by :func:`_track_action` only for the events that define them.
    """

    model_config = _SCHEMA
    category: Any = None
    product_id: Any = None
    sku: Any = None
    name: Any = None
    price: Any = None
    quantity: Any = None
    revenue: Any = None
    total: Any = None
    products: Any = None


class _Common(BaseModel):
    """Fields every Segment message carries."""

    model_config = _SCHEMA
    message_id: str | None = Field(default=None, alias="messageId", max_length=256)
    user_id: str | None = Field(default=None, alias="userId", max_length=256)
    anonymous_id: str | None = Field(default=None, alias="anonymousId", max_length=256)
    timestamp: datetime
    context: Context | None = None


class TrackEvent(_Common):
    """A `track` call: a named action with free-form properties."""

    type: Literal["track"]
    event: str = Field(min_length=1, max_length=256)
    properties: Properties | None = None


class PageEvent(_Common):
    """A `page` (web) or `screen` (app) view."""

    type: Literal["page", "screen"]
    name: str | None = None


class IdentifyEvent(_Common):
    """An `identify` call; links `anonymousId` to `userId` when both are set."""

    type: Literal["identify"]


class AliasEvent(_Common):
    """An `alias` call: `previousId` and `userId` are the same person."""

    type: Literal["alias"]
    previous_id: str = Field(alias="previousId", min_length=1, max_length=256)


class GroupEvent(_Common):
    """A `group` call; accepted and counted, not used for segmentation."""

    type: Literal["group"]


SegmentEvent: TypeAlias = Annotated[
    TrackEvent | PageEvent | IdentifyEvent | AliasEvent | GroupEvent,
    Field(discriminator="type"),
]

_EVENT: TypeAdapter[SegmentEvent] = TypeAdapter(SegmentEvent)  # type: ignore[arg-type, unused-ignore]


class _InvalidFieldError(ValueError):
    """A property that an e-commerce event defines has an unusable value."""

    def __init__(self, reason: str, field: str, value: Any, expected: str) -> None:
        super().__init__(f"properties.{field}: expected {expected}, got {value!r:.60}")
        self.reason = reason


def _amount(value: Any, field: str, reason: str) -> float | None:
    """A non-negative finite number, or `None` when absent."""
    if value is None:
        return None
    try:
        amount = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        amount = math.nan
    if not math.isfinite(amount) or amount < 0:
        raise _InvalidFieldError(reason, field, value, "a non-negative number")
    return amount


def _category(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 128:
        raise _InvalidFieldError(Reason.INVALID_PROPERTIES, field, value, "a category name")
    return value


def _order(properties: Properties) -> tuple[float, tuple[str, ...]]:
    """Revenue (`revenue`, else `total`, else 0) and product categories."""
    revenue = _amount(properties.revenue, "revenue", Reason.INVALID_REVENUE)
    if revenue is None:
        revenue = _amount(properties.total, "total", Reason.INVALID_REVENUE) or 0.0
    products = properties.products or []
    if not isinstance(products, list):
        raise _InvalidFieldError(Reason.INVALID_PROPERTIES, "products", products, "a list")
    categories: dict[str, None] = {}
    for index, product in enumerate(products):
        if not isinstance(product, dict):
            field = f"products.{index}"
            raise _InvalidFieldError(Reason.INVALID_PROPERTIES, field, product, "an object")
        category = _category(product.get("category"), f"products.{index}.category")
        if category:
            categories[category] = None
    return revenue, tuple(categories)


def _product_id(properties: Properties) -> str | None:
    """The product's `product_id`, else `sku`, else `name`, as text of at most 128 characters."""
    for given in (properties.product_id, properties.sku, properties.name):
        if given is not None and given != "" and not isinstance(given, dict | list | bool):
            return str(given)[:128]
    return None


def _product(properties: Properties, kind: EventKind) -> tuple[float, tuple[str, ...]]:
    """Cart value (price times quantity) and the product's category."""
    category = _category(properties.category, "category")
    price = _amount(properties.price, "price", Reason.INVALID_PROPERTIES)
    quantity = _amount(properties.quantity, "quantity", Reason.INVALID_PROPERTIES)
    value = 0.0
    if kind is not EventKind.PRODUCT_VIEWED and price is not None:
        value = price * (1.0 if quantity is None else quantity)
    return value, (category,) if category else ()


_NO_PROPERTIES = Properties()
_PRODUCT_KINDS = frozenset((EventKind.PRODUCT_VIEWED, EventKind.CART_ADD, EventKind.CART_REMOVE))


def _rejection(error: ValidationError) -> Rejection:
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    location = ".".join(str(part) for part in first["loc"])
    detail = f"{location}: {first['msg']}" if location else first["msg"]
    if kind in ("json_invalid", "json_type"):
        return Rejection(Reason.INVALID_JSON, detail)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return Rejection(Reason.UNKNOWN_TYPE, detail)
    if len(first["loc"]) > 1 and first["loc"][1] == "timestamp":
        return Rejection(Reason.INVALID_TIMESTAMP, detail)
    return Rejection(Reason.INVALID_SCHEMA, detail)


def _message_id(raw: bytes, given: str | None) -> str:
    """The event's `messageId`, or a digest of its bytes when it has none."""
    if given:
        return given
    return "sha1:" + hashlib.sha1(raw, usedforsecurity=False).hexdigest()


def decode_event(raw: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Action | Rejection:
    """Validate one raw Segment message and reduce it to an :class:`Action`.

    Returns a :class:`Rejection` instead of raising, so a caller can route the
    original bytes to a dead-letter topic with the reason.

    >>> decode_event(b'{"type": "page", "anonymousId": "a1",'
    ...              b' "timestamp": "2026-11-01T10:00:00+01:00"}').timestamp
    1793523600.0
    >>> decode_event(b'{"type": "page", "timestamp": "2026-11-01T10:00:00Z"}').reason
    'missing_id'
    """
    if len(raw) > max_bytes:
        return Rejection(Reason.OVERSIZED, f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        event = _EVENT.validate_json(raw)
    except ValidationError as error:
        return _rejection(error)
    user_id = event.user_id or event.anonymous_id
    if not user_id:
        return Rejection(Reason.MISSING_ID, "neither userId nor anonymousId is set")
    moment = event.timestamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    context = event.context
    device = context.device.type if context and context.device and context.device.type else None
    kind = EventKind.OTHER
    value = 0.0
    categories: tuple[str, ...] = ()
    previous_id = product = None
    if event.type == "track":
        kind = TRACK_KINDS.get(event.event, EventKind.OTHER)
        properties = event.properties or _NO_PROPERTIES
        try:
            if kind is EventKind.ORDER:
                value, categories = _order(properties)
            elif kind in _PRODUCT_KINDS:
                value, categories = _product(properties, kind)
                product = _product_id(properties)
        except _InvalidFieldError as invalid:
            return Rejection(invalid.reason, str(invalid))
    elif event.type in ("page", "screen"):
        kind = EventKind.PAGE
    elif event.type == "identify":
        kind = EventKind.IDENTIFY
    elif event.type == "alias":
        kind = EventKind.ALIAS
        previous_id = event.previous_id
    return Action(
        user_id,
        _message_id(raw, event.message_id),
        kind,
        moment.timestamp(),
        value,
        categories,
        device.lower() if device else None,
        event.anonymous_id if event.user_id else None,
        previous_id,
        product,
    )
