"""Destination files are validated with line and field; requests are signed so that the
`standardwebhooks` library verifies them."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from standardwebhooks import Webhook

from processors.destinations import (
    EVENT_TYPE,
    DestinationFileError,
    MissingSecretError,
    parse_destinations,
    webhook_request,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CHANGE = {
    "user_id": "ann",
    "version": 4,
    "entered": ["Cart Abandoners"],
    "exited": [],
    "segments": ["Cart Abandoners"],
    "reason": "time",
    "cart": {"products": [{"product_id": "p1"}]},
}


def test_a_valid_file_gives_its_destinations_with_defaults():
    crm, audience = parse_destinations(
        f"""
destinations:
  - name: crm
    url: http://127.0.0.1:9000/hook
    secret: {SECRET}
  - name: audience
    url: https://ads.example.com/in
    secret_env: ADS_SECRET
    segments: [Cart Abandoners, c3]
    directions: [exited]
    reasons: [event, time]
    timeout: 2.5
    max_attempts: 3
    batch: 50
"""
    )
    assert (crm.name, crm.directions, crm.batch, crm.max_attempts, crm.start) == (
        "crm",
        ("entered", "exited"),
        1,
        12,
        "earliest",
    )
    assert audience.segments == ("Cart Abandoners", "c3")
    assert audience.signing_secret({"ADS_SECRET": SECRET}) == SECRET
    with pytest.raises(MissingSecretError, match="ADS_SECRET is not set"):
        audience.signing_secret({})


@pytest.mark.parametrize(
    ("entry", "line", "field", "message"),
    [
        ("    url: http://x\n", 2, "destinations[0]", "give `secret`"),
        (f"    url: http://x\n    secret: {SECRET}\n    secret_env: S\n", 2, "destinations[0]", "one of them"),
        ("    url: http://x\n    secret: sk_nope\n", 4, "destinations[0].secret", "whsec_"),
        ("    url: http://x\n    secret: whsec_***\n", 4, "destinations[0].secret", "base64"),
        (f"    url: http://x\n    secret: {SECRET}\n    directions: [up]\n", 5, "destinations[0].directions[0]", "'entered' or 'exited'"),
        (f"    url: http://x\n    secret: {SECRET}\n    batch: 0\n", 5, "destinations[0].batch", "greater than or equal to 1"),
        (f"    url: http://x\n    secret: {SECRET}\n    retries: 3\n", 5, "destinations[0].retries", "Extra inputs"),
    ],
)  # fmt: skip
def test_errors_name_their_line_and_field(entry, line, field, message):
    with pytest.raises(DestinationFileError) as refused:
        parse_destinations("destinations:\n  - name: crm\n" + entry)
    (problem,) = refused.value.errors
    assert (problem.line, problem.field) == (line, field), problem
    assert message in problem.message


def test_a_name_given_twice_and_broken_yaml_are_refused():
    twice = f"destinations:\n  - {{name: a, url: 'http://x', secret: {SECRET}}}\n"
    twice += f"  - {{name: a, url: 'http://y', secret: {SECRET}}}\n"
    with pytest.raises(DestinationFileError, match=r"line 3, destinations\[1\].name: duplicate"):
        parse_destinations(twice)
    with pytest.raises(DestinationFileError, match=r"line 3, \(yaml\)"):
        parse_destinations("destinations:\n  - name: [\n")


def test_filters_take_segments_directions_and_reasons():
    (only,) = parse_destinations(
        f"destinations:\n  - {{name: a, url: 'http://x', secret: {SECRET}, "
        "segments: [Buyers], directions: [exited], reasons: [event]}\n"
    )
    assert only.matches({"entered": [], "exited": ["Buyers"], "reason": "event"})
    assert not only.matches({"entered": ["Buyers"], "exited": [], "reason": "event"})
    assert not only.matches({"entered": [], "exited": ["Buyers"], "reason": "time"})
    assert not only.matches({"entered": [], "exited": ["Browsers"], "reason": "event"})
    (everything,) = parse_destinations(
        f"destinations:\n  - {{name: a, url: 'http://x', secret: {SECRET}}}\n"
    )
    assert everything.matches({"entered": [], "exited": ["Buyers"], "reason": "erased"})
    assert not everything.matches({"entered": [], "exited": [], "reason": "model"})


def test_reasons_are_the_change_reasons_late_among_them():
    (corrections,) = parse_destinations(
        f"destinations:\n  - {{name: a, url: 'http://x', secret: {SECRET}, "
        "reasons: [time, late]}\n"
    )
    assert corrections.matches({"entered": [], "exited": ["Cart Abandoners"], "reason": "late"})
    assert not corrections.matches({"entered": ["Buyers"], "exited": [], "reason": "event"})
    with pytest.raises(
        DestinationFileError,
        match=r"line 2, destinations\[0\]\.reasons\[1\]: Input should be 'event', 'late'",
    ):
        parse_destinations(
            f"destinations:\n  - {{name: a, url: 'http://x', secret: {SECRET}, "
            "reasons: [time, lateness]}\n"
        )


def test_cluster_ids_filter_moves_between_clusters():
    (audience,) = parse_destinations(
        f"destinations:\n  - {{name: a, url: 'http://x', secret: {SECRET}, segments: [c3]}}\n"
    )
    into = {"entered": [], "exited": [], "cluster": "c3", "previous_cluster": "c1"}
    out_of = {"entered": [], "exited": [], "cluster": "c1", "previous_cluster": "c3"}
    elsewhere = {"entered": [], "exited": [], "cluster": "c2", "previous_cluster": "c1"}
    stays = {"entered": ["Buyers"], "exited": [], "cluster": "c3", "previous_cluster": "c3"}
    assert audience.matches(into)
    assert audience.matches(out_of)
    assert not audience.matches(elsewhere)
    assert not audience.matches(stays)
    entering = audience.model_copy(update={"directions": ("entered",)})
    assert entering.matches(into)
    assert not entering.matches(out_of)


def test_requests_verify_with_the_standardwebhooks_library():
    (single, batched) = parse_destinations(
        f"destinations:\n  - {{name: a, url: 'http://x', secret: {SECRET}}}\n"
        f"  - {{name: b, url: 'http://x', secret: {SECRET}, batch: 10}}\n"
    )
    now = datetime.now(UTC)
    headers, body = webhook_request(single, [CHANGE], now, SECRET)
    payload = Webhook(SECRET).verify(body, headers)
    assert payload == {"type": EVENT_TYPE, "timestamp": now.isoformat(), "data": CHANGE}
    again, _ = webhook_request(single, [CHANGE], now, SECRET)
    assert again["webhook-id"] == headers["webhook-id"]
    other, _ = webhook_request(batched, [CHANGE], now, SECRET)
    assert other["webhook-id"] != headers["webhook-id"]

    later = {**CHANGE, "version": 5}
    headers, body = webhook_request(batched, [CHANGE, later], now, SECRET)
    assert Webhook(SECRET).verify(body, headers)["data"] == [CHANGE, later]
    tampered = body.replace(b'"ann"', b'"bob"')
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(SECRET).verify(tampered, headers)
    assert orjson.loads(body)["type"] == "segment.changed"
