"""Segment HTTP Tracking API calls, checked and turned into messages for the events topic.

The collector hands each request body here. What makes a call unusable as a
whole — a body over the limits, JSON that does not parse, an event without
any id — raises :class:`CallError` with a message naming the problem (the
collector answers 400). Anything else is the worker's to judge: an event that
fails the event schema there goes to the dead-letter topic with its reason, so
one odd event never costs a client its whole batch.

Like Segment, the collector stamps each event with `receivedAt`, gives it a
`messageId` when it has none, and corrects a given `timestamp` for the
client's clock skew (`timestamp + (receivedAt - sentAt)`, the original kept as
`originalTimestamp`). An event without `timestamp` takes its
`originalTimestamp` so corrected (RudderStack's SDKs send only that), else
`receivedAt`. A batch's top-level `context` and `integrations` are
merged into each of its events.

>>> from datetime import UTC, datetime
>>> received = datetime(2026, 11, 1, 12, 0, 5, tzinfo=UTC)
>>> [call] = decode_calls(b'{"userId": "u1", "event": "Order Completed",'
...     b' "timestamp": "2026-11-01T12:00:00Z", "sentAt": "2026-11-01T12:00:02Z"}',
...     "track", received, lambda: "m1")
>>> call.key, orjson.loads(call.value)["timestamp"]
(b'u1', '2026-11-01T12:00:03.000Z')
>>> decode_calls(b'{"event": "x"}', "track", received, lambda: "m1")
Traceback (most recent call last):
...
processors.tracking.CallError: neither userId nor anonymousId is set
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from processors.privacy import PrivacyPolicy

MAX_CALL_BYTES = 32 * 1024
"""Segment's limit on one event (and on the body of a single call), in bytes."""
MAX_BATCH_BYTES = 500 * 1024
"""Segment's limit on the body of a batch call, in bytes."""

CALL_TYPES = ("track", "page", "screen", "identify", "alias", "group")
"""The calls the Tracking API takes, each at `/v1/<type>` and inside `/v1/batch`."""


class CallError(ValueError):
    """The request cannot be taken; the message says why (the collector answers 400)."""


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    """One event ready for the events topic: partition key, JSON body and call type."""

    key: bytes
    value: bytes
    type: str


def decode_calls(
    body: bytes,
    endpoint: str,
    received_at: datetime,
    new_message_id: Callable[[], str],
    *,
    max_event_bytes: int = MAX_CALL_BYTES,
    privacy: PrivacyPolicy | None = None,
) -> list[TrackedEvent]:
    """The events of one request body sent to `/v1/<endpoint>` (a call type or `batch`).

    The body is already decompressed and within the request limit; `max_event_bytes`
    is the limit of each event. `privacy` scrubs personal data from each event.
    """
    document = _object(body)
    request = _Request(_iso(received_at), received_at, new_message_id, max_event_bytes, privacy)
    if endpoint == "batch":
        batch = document.get("batch")
        if not isinstance(batch, list):
            raise CallError("batch: expected a list of events")
        shared = {name: document[name] for name in ("context", "integrations") if name in document}
        sent_at = document.get("sentAt")
        events = []
        for index, event in enumerate(batch):
            if not isinstance(event, dict):
                raise CallError(f"batch[{index}]: expected an object")
            if "sentAt" not in event and sent_at is not None:
                event["sentAt"] = sent_at
            for name, value in shared.items():
                if isinstance(value, dict) and isinstance(event.get(name, {}), dict):
                    event[name] = {**value, **event.get(name, {})}
            events.append(_event(event, None, f"batch[{index}]", request))
        return events
    if endpoint not in CALL_TYPES:
        raise CallError(f"unknown call /v1/{endpoint}")
    return [_event(document, endpoint, "", request)]


def _object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise CallError(f"invalid JSON: {error}") from None
    if not isinstance(document, dict):
        raise CallError("expected a JSON object")
    return document


@dataclass(frozen=True, slots=True)
class _Request:
    """What every event of one request is stamped and checked with."""

    received: str
    """`received_at` as written into `receivedAt`, formatted once a request."""
    received_at: datetime
    new_message_id: Callable[[], str]
    max_event_bytes: int
    privacy: PrivacyPolicy | None


def _event(
    event: dict[str, Any], call_type: str | None, where: str, request: _Request
) -> TrackedEvent:
    prefix = f"{where}: " if where else ""
    given = event.get("type", call_type)
    if call_type is not None:
        given = call_type
    if given not in CALL_TYPES:
        raise CallError(f"{prefix}type: expected one of {', '.join(CALL_TYPES)}, got {given!r:.40}")
    event["type"] = given
    user = _identifier(event.get("userId")) or _identifier(event.get("anonymousId"))
    if user is None:
        raise CallError(f"{prefix}neither userId nor anonymousId is set")
    event.pop("writeKey", None)
    if not event.get("messageId"):
        event["messageId"] = request.new_message_id()
    received_at, received = request.received_at, request.received
    event["receivedAt"] = received
    sent = _moment(event.get("sentAt"))
    if event.get("timestamp") is None:
        original = _moment(event.get("originalTimestamp"))
        if original is None:
            event["timestamp"] = received
        else:  # RudderStack's SDKs stamp only originalTimestamp
            event["timestamp"] = _iso(original + (received_at - (sent or received_at)))
    else:
        stamped = _moment(event["timestamp"])
        if stamped is not None and sent is not None:
            event["originalTimestamp"] = event["timestamp"]
            event["timestamp"] = _iso(stamped + (received_at - sent))
    if request.privacy is not None:
        request.privacy.scrub(event)
    value = orjson.dumps(event)
    if len(value) > (limit := request.max_event_bytes):
        raise CallError(f"{prefix}event is {len(value)} bytes, over the limit of {limit}")
    return TrackedEvent(user.encode(), value, given)


def _identifier(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        text = str(value)
        return text if text.strip() else None
    return None


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
