"""Event time on the real pipeline: replay equals live, and late, duplicate and future events."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime

import orjson
import pytest

from streams.redis_clients import redis_client
from streams.tools.replay import wait_until_applied
from streams.tools.simulate import KafkaSink
from streams.tools.simulator import SimulatedEvent, Simulation
from tests.integration.conftest import (
    advance,
    assert_same_profiles,
    export,
    isolated_settings,
    read_topic,
    segstream,
    wait_for_events,
)

pytestmark = pytest.mark.integration


def produce_events(settings, events):
    sink = KafkaSink(settings)
    for event in events:
        sink.write(event)
    sink.close()


def page(user, message_id, timestamp):
    body = {"type": "page", "userId": user, "messageId": message_id, "timestamp": timestamp}
    return SimulatedEvent(0.0, user.encode(), orjson.dumps(body))


def transitions(settings):
    """Each user's change events as (version, entered, exited, reason, event time, cart)."""
    found = defaultdict(dict)
    for message in read_topic(settings, settings.changes_topic):
        change = orjson.loads(message.value())
        found[change["user_id"]][change["version"]] = (
            change["version"],
            change["entered"],
            change["exited"],
            change["reason"],
            change["event_time"],
            change["cart"],
        )
    return {user: [versions[v] for v in sorted(versions)] for user, versions in found.items()}


def test_replaying_a_shuffled_export_gives_the_profiles_and_changes_of_live_processing(
    stack, config, start_worker, model, tmp_path
):
    events = list(Simulation(users=120, seed=31).events())
    until = datetime(2026, 11, 8, tzinfo=UTC).timestamp()
    produce_events(config, events)  # live: in the order the trackers sent them
    live_worker = start_worker()
    wait_for_events(model, len(events))
    wait_until_applied(config, advance(config, until), timeout=120)
    live_worker.stop()

    shuffled = tmp_path / "export.jsonl"
    lines = [event.value for event in events]
    random.Random(3).shuffle(lines)
    shuffled.write_bytes(b"\n".join(lines) + b"\n")
    replayed = isolated_settings(stack)
    replay_worker = start_worker(replayed)
    done = segstream(
        replayed,
        "replay",
        str(shuffled),
        "--run-events",
        "5000",
        "--until",
        "2026-11-08T00:00:00Z",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"replayed {len(events)} events" in done.stderr
    replay_worker.stop()
    assert_same_profiles(export(replayed), export(config))
    # An identity merge travels between partitions, so where it falls among a user's
    # time transitions depends on timing; every other user's changes must be the same.
    merged = set()
    for event in map(orjson.loads, lines):
        if event.get("type") in ("identify", "alias"):
            merged |= {event.get(k) for k in ("userId", "anonymousId", "previousId")}
    live, replay = transitions(config), transitions(replayed)
    assert set(live) == set(replay)
    compared = [user for user in live if user not in merged]
    assert len(compared) >= 60
    differing = [user for user in compared if live[user] != replay[user]]
    assert not differing, (live[differing[0]], replay[differing[0]])
    assert sum(change[3] == "time" for user in compared for change in live[user]) >= 60


def test_until_puts_every_profile_as_of_that_moment(config, start_worker, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(e.value for e in Simulation(users=30, seed=4).events()) + b"\n")
    worker = start_worker()
    done = segstream(config, "replay", str(path), "--until", "2026-11-20T00:00:00Z", timeout=300)
    assert done.returncode == 0, done.stderr
    worker.stop()
    rows = [orjson.loads(line) for line in export(config)]
    until = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    assert {row["as_of"] for row in rows} == {until}
    assert all(row["features"]["days_since_last_seen"] >= 19 for row in rows)
    assert all(row["features"]["sessions_7d"] == 0 for row in rows)


def test_late_duplicate_and_future_events(config, start_worker, model):
    events = [
        page("ann", "m1", "2026-10-01T12:00:00Z"),
        page("ann", "m1", "2026-10-01T12:00:00Z"),  # the same message again: applied once
        page("bob", "m2", "2026-10-01T14:00:00Z"),  # moves the watermark to 13:00 ...
        page("ann", "m3", "2026-10-01T13:30:00Z"),  # ... within the lateness: applied
        page("ann", "m4", "2026-10-01T12:59:59Z"),  # before the watermark: late
        page("ann", "m5", "2999-01-01T00:00:00Z"),  # far in the future
        SimulatedEvent(
            0.0, b"ann", b'{"type": "page", "userId": "ann", "pad": "' + b"x" * 40_000 + b'"}'
        ),
    ]
    one = isolated_single_partition(config)
    produce_events(one, events)
    worker = start_worker(one)
    counters = wait_for_events_including_duplicates(model_for(one), len(events))
    worker.stop()
    assert counters["events"] == 3
    assert counters["duplicates"] == 1
    assert counters["late"] == 1
    assert counters["dead_letters"] == 3
    reasons = sorted(
        dict(m.headers())["reason"].decode() for m in read_topic(one, one.dead_letter_topic)
    )
    assert reasons == ["future_timestamp", "late", "oversized"]
    ann = orjson.loads(segstream(one, "profile", "ann").stdout)
    assert ann["features"]["events_lifetime"] == 2


def isolated_single_partition(config):
    from streams.topics import ensure_topics

    settings = config.model_copy(
        update={
            "events_topic": config.events_topic + "-one",
            "redis_prefix": config.redis_prefix + "one",
            "partitions": 1,
        }
    )
    ensure_topics(settings)
    return settings


def model_for(settings):

    from state.read_model import ReadModel

    return ReadModel(redis_client(settings), settings.key_layout())


def wait_for_events_including_duplicates(model, total, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counters = model.counters()
        seen = sum(counters.get(name, 0) for name in ("events", "duplicates", "dead_letters"))
        if seen >= total:
            return counters
        time.sleep(0.2)
    raise AssertionError(f"only {model.counters()} of {total} events")


def identified(kind, user_id, anonymous_id, message_id, timestamp, **fields):
    body = {"type": kind, "messageId": message_id, "timestamp": timestamp, **fields}
    if user_id:
        body["userId"] = user_id
    if anonymous_id:
        body["anonymousId"] = anonymous_id
    key = (user_id or anonymous_id).encode()
    return SimulatedEvent(0.0, key, orjson.dumps(body))


def test_identify_and_alias_merge_anonymous_history_into_the_known_user(
    config, start_worker, model
):
    events = [
        identified("page", None, "anon-1", "a1", "2026-10-01T10:00:00Z"),
        identified("page", None, "anon-1", "a2", "2026-10-01T10:01:00Z"),
        identified("page", None, "old-id", "o1", "2026-10-01T09:00:00Z"),
        identified("identify", "ann", "anon-1", "i1", "2026-10-01T10:02:00Z"),
        identified("track", "ann", "anon-1", "t1", "2026-10-01T10:03:00Z", event="Product Viewed"),
        identified("alias", "ann", None, "al1", "2026-10-01T10:04:00Z", previousId="old-id"),
    ]
    produce_events(config, events)
    worker = start_worker()
    wait_for_events(model, len(events))
    # later events under the anonymous id alone still land in ann's profile
    produce_events(config, [identified("page", None, "anon-1", "a3", "2026-10-01T10:05:00Z")])
    wait_for_events(model, len(events) + 1)
    worker.stop()

    ann = orjson.loads(segstream(config, "profile", "ann").stdout)
    assert ann["features"]["events_lifetime"] == 5  # 3 pages of anon-1, 1 of old-id, 1 view
    assert ann["features"]["days_since_first_seen"] > 0.04  # old-id's 09:00 page
    assert orjson.loads(segstream(config, "profile", "anon-1").stdout)["user_id"] == "ann"
    assert orjson.loads(segstream(config, "profile", "old-id").stdout)["user_id"] == "ann"
    exported = [orjson.loads(line)["user_id"] for line in export(config)]
    assert exported == ["ann"]
    counters = model.counters()
    assert (
        counters["relays_sent"] == counters["relays_applied"] == 5
    )  # 2 merges, 2 absorbs, 1 forward
