"""Personal data in events: hashed or dropped before segstream stores an event.

Trackers put e-mail addresses and phone numbers in `properties` (and in
`traits` on identify calls). A :class:`PrivacyPolicy` names those fields and
replaces each value by its SHA-256 (of the trimmed, lower-cased text, the form
ad platforms' customer-match lists take) or removes it.

>>> policy = PrivacyPolicy(frozenset({"email"}), "hash")
>>> event = {"properties": {"Email": " Ann@Example.com ", "plan": "pro"}}
>>> policy.scrub(event)
1
>>> event["properties"]["Email"] == "sha256:" + hashlib.sha256(b"ann@example.com").hexdigest()
True
>>> PrivacyPolicy(frozenset({"email"}), "drop").scrub_bytes(b'{"traits": {"email": "a@b.c"}}')
b'{"traits":{}}'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import orjson

HASH_PREFIX = "sha256:"
"""What a hashed value starts with, so it is never hashed twice."""


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    """The field names (lower case) that hold personal data, and what to do with their values."""

    fields: frozenset[str]
    action: Literal["hash", "drop"] = "hash"

    def scrub(self, event: dict[str, Any]) -> int:
        """Hash or drop the personal fields of `event`'s `properties`, `traits` and
        `context.traits`, in place; how many values it changed."""
        if not self.fields:
            return 0
        context = event.get("context")
        holders = [event.get("properties"), event.get("traits")]
        if isinstance(context, dict):
            holders.append(context.get("traits"))
        changed = 0
        for holder in holders:
            if not isinstance(holder, dict):
                continue
            for name in [name for name in holder if name.lower() in self.fields]:
                value = holder[name]
                if self.action == "drop":
                    del holder[name]
                elif value is None or (isinstance(value, str) and value.startswith(HASH_PREFIX)):
                    continue
                else:
                    holder[name] = pseudonym(value)
                changed += 1
        return changed

    def scrub_bytes(self, raw: bytes) -> bytes:
        """`raw` with its personal fields scrubbed when it is a JSON object holding any;
        otherwise `raw` itself (bytes that do not parse cannot be read for them)."""
        if not self.fields:
            return raw
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
        if not isinstance(event, dict) or not self.scrub(event):
            return raw
        return orjson.dumps(event)


def pseudonym(value: Any) -> str:
    """`sha256:` and the hex SHA-256 of the value's trimmed, lower-cased text (JSON for
    objects and lists).

    >>> pseudonym(" +44 20 7946 0958") == pseudonym("+44 20 7946 0958")
    True
    """
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return HASH_PREFIX + hashlib.sha256(text.strip().lower().encode()).hexdigest()
