"""Personal data is hashed or dropped wherever an event carries it."""

import hashlib
from datetime import UTC, datetime

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.privacy import PrivacyPolicy, pseudonym
from processors.tracking import decode_calls

HASH = PrivacyPolicy(frozenset({"email", "phone"}), "hash")
DROP = PrivacyPolicy(frozenset({"email", "phone"}), "drop")
_NOW = datetime(2026, 11, 1, tzinfo=UTC)


def identify():
    return {
        "type": "identify",
        "userId": "ann",
        "traits": {"Email": "Ann@Example.com", "name": "Ann"},
        "context": {"traits": {"phone": "+44 20 7946 0958"}, "ip": "10.0.0.1"},
        "properties": {"email": None, "plan": "pro"},
    }


def test_hashing_covers_properties_traits_and_context_traits_whatever_the_case():
    event = identify()
    assert HASH.scrub(event) == 2  # a null stays null
    assert event["traits"] == {
        "Email": "sha256:" + hashlib.sha256(b"ann@example.com").hexdigest(),
        "name": "Ann",
    }
    assert event["context"]["traits"]["phone"] == pseudonym("+44 20 7946 0958")
    assert event["context"]["ip"] == "10.0.0.1"
    assert event["properties"] == {"email": None, "plan": "pro"}
    assert HASH.scrub(event) == 0  # hashed values are not hashed again


def test_dropping_removes_the_fields():
    event = identify()
    assert DROP.scrub(event) == 3
    assert event["traits"] == {"name": "Ann"}
    assert event["context"]["traits"] == {}
    assert event["properties"] == {"plan": "pro"}


def test_bytes_that_hold_nothing_personal_or_do_not_parse_are_kept_as_they_are():
    for raw in (b'{"type": "page", "properties": {"path": "/"}}', b"{not json", b"[1, 2]"):
        assert HASH.scrub_bytes(raw) is raw
    personal = b'{"traits": {"email": "a@b.c"}}'
    assert PrivacyPolicy(frozenset()).scrub_bytes(personal) is personal  # no policy: untouched
    assert b"a@b.c" not in HASH.scrub_bytes(personal)


def test_the_collector_stores_no_personal_value():
    body = orjson.dumps({"batch": [identify(), {**identify(), "type": "track", "event": "X"}]})
    events = decode_calls(body, "batch", _NOW, lambda: "m", privacy=HASH)
    for event in events:
        assert b"Ann@Example.com" not in event.value
        assert b"7946" not in event.value


_NAMES = st.sampled_from(["email", "EMAIL", "phone", "name", "plan"])
_VALUES = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.lists(st.integers()))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_NAMES, _VALUES), st.dictionaries(_NAMES, _VALUES))
def test_no_personal_value_survives_either_action(properties, traits):
    for policy in (HASH, DROP):
        event = {"properties": dict(properties), "traits": dict(traits)}
        policy.scrub(event)
        for holder in (event["properties"], event["traits"]):
            for name, value in holder.items():
                if name.lower() in policy.fields:
                    assert value is None or value.startswith("sha256:")
