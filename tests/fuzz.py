"""Random and mutated Segment payloads, for fuzzing the decoder and the worker.

`payloads` is a hypothesis strategy; :func:`mutants` draws the same kinds of payload
from a seeded `random.Random`, for producing many at once to a real broker.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import orjson
from hypothesis import strategies as st

VALID: list[dict[str, Any]] = [
    {
        "type": "track",
        "event": "Order Completed",
        "userId": "u-1",
        "messageId": "m-1",
        "timestamp": "2026-10-01T12:00:00Z",
        "properties": {"revenue": 42.5, "products": [{"product_id": "p1", "category": "shoes"}]},
        "context": {"device": {"type": "mobile"}, "userAgent": "Mozilla/5.0", "locale": "en-GB"},
    },
    {
        "type": "track",
        "event": "Product Added",
        "anonymousId": "a-1",
        "timestamp": "2026-10-01T12:01:00+02:00",
        "properties": {"product_id": "p2", "category": "hats", "price": 19.9, "quantity": 2},
    },
    {"type": "page", "name": "Home", "userId": "u-2", "timestamp": "2026-10-01T12:02:00Z"},
    {"type": "identify", "userId": "u-3", "anonymousId": "a-3", "timestamp": "2026-10-01T12:03Z"},
    {"type": "alias", "userId": "u-4", "previousId": "a-4", "timestamp": "2026-10-01T12:04:00Z"},
    {"type": "screen", "anonymousId": "a-5", "timestamp": "2026-10-01T12:05:00.123Z"},
]
"""Valid events of every call type, the seeds of mutation."""

FIELDS = ("type", "event", "userId", "anonymousId", "messageId", "timestamp", "properties",
          "context", "previousId", "name")  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.integers()
    | st.text(max_size=12)
    | st.sampled_from(["2026-13-01T00:00:00Z", "yesterday", "", "-1", "1e309", "Order Completed"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def _field_mutants(draw: st.DrawFn) -> bytes:
    event = dict(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            event[name] = draw(json_values)
        else:
            event.pop(name, None)
    properties = event.get("properties")
    if isinstance(properties, dict) and draw(st.booleans()):
        event["properties"] = {**properties, draw(st.text(max_size=10)): draw(json_values)}
    return _dumps(event)


def _dumps(value: Any) -> bytes:
    """JSON as Python writes it: integers of any size, `Infinity` for infinite floats."""
    return json.dumps(value).encode()


@st.composite
def _byte_mutants(draw: st.DrawFn) -> bytes:
    raw = bytearray(orjson.dumps(draw(st.sampled_from(VALID))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        match draw(st.sampled_from(["flip", "cut", "insert"])):
            case "flip":
                raw[at] = draw(st.integers(0, 255))
            case "cut":
                del raw[at:]
                if not raw:
                    break
            case _:
                raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(_dumps),
    _field_mutants(),
    _byte_mutants(),
)
"""Bytes a broken tracker might send: noise, stray JSON, events with fields changed or
removed, events with bytes flipped, cut or inserted."""


def mutants(seed: int, count: int) -> Iterator[bytes]:
    """`count` payloads like :data:`payloads`, from a seeded generator."""
    rng = random.Random(seed)
    values: list[Any] = [None, True, -1, 0, 3.5, "", "x" * 300, "yesterday", [], {}, {"a": [1]}]
    for _ in range(count):
        event = dict(rng.choice(VALID))
        raw = orjson.dumps(event)
        match rng.randrange(4):
            case 0:
                raw = rng.randbytes(rng.randrange(200))
            case 1:
                for _ in range(rng.randint(1, 3)):
                    name = rng.choice(FIELDS)
                    if rng.random() < 0.7:
                        event[name] = rng.choice(values)
                    else:
                        event.pop(name, None)
                raw = orjson.dumps(event)
            case 2:
                data = bytearray(raw)
                for _ in range(rng.randint(1, 4)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                raw = bytes(data)
            case _:
                raw = raw[: rng.randrange(len(raw))]
        yield raw
