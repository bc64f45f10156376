"""The worker on a real broker and Redis, against `tests/oracle.py` over the same raw events."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime

import orjson
import pytest
import yaml

from processors._core import PREDICTIONS
from processors.events import Action, decode_event
from state.redis_store import RedisStateStore
from streams.settings import default_rules_file
from streams.tools.replay import wait_until_applied
from streams.tools.simulate import KafkaSink, send
from streams.tools.simulator import Simulation
from tests import oracle
from tests.integration.conftest import advance, read_topic, segstream, wait_for_events

pytestmark = pytest.mark.integration


def produce(config, simulation, limit=0, skip=0):
    """Produce the simulation's events (after the first `skip`); return them."""
    import threading
    from itertools import islice

    events = list(islice(simulation.events(), skip, (skip + limit) if limit else None))

    class Replay(Simulation):
        def events(self):
            return iter(events)

    replay = Replay.__new__(Replay)
    send(replay, KafkaSink(config), rate=0, duration=0, limit=0, stop=threading.Event())
    return events


UNTIL = datetime(2026, 11, 3, tzinfo=UTC).timestamp()
"""Past the simulations' end: where the tests move every watermark, so every timer fires."""


def expected_of(config, events, until):
    """What the oracle says of `events` as of `until`: each person's features and segments,
    and how many of the messages the schema refuses."""
    rules = yaml.safe_load((config.rules_file or default_rules_file()).read_text())
    read = [oracle.readable(event.value) for event in events]
    people = oracle.people(event for event in read if event is not None)
    expected = {
        person: (oracle.features(mine, until), oracle.segments(rules, mine, until))
        for person, mine in people.items()
    }
    return expected, sum(event is None for event in read)


def assert_store_matches(config, model, expected, until):
    """Every person's state in Redis as of `until`, with the oracle's features and segments,
    and the membership sets those segments make."""
    store = RedisStateStore(model.client, config.key_layout(), config.group_id)
    stored = {user_id: user for user_id, user in store.users() if user.alias_of is None}
    assert set(stored) == set(expected)
    for user_id, (features, segments) in expected.items():
        assert stored[user_id].as_of == until, user_id
        got = stored[user_id].features()
        assert {k: v for k, v in features.items() if got[k] != v} == {}, user_id
        assert set(stored[user_id].segments) == segments, user_id
    members = defaultdict(set)
    for user_id, (_, segments) in expected.items():
        for segment in segments:
            members[segment].add(user_id)
    for segment, size in model.segment_sizes().items():
        assert size == len(members[segment]), segment
        assert model.segment_members(segment) == members[segment]


def test_worker_segments_users_dead_letters_and_publishes_changes(config, model, start_worker):
    simulation = Simulation(users=120, seed=5, invalid_share=0.01)
    events = produce(config, simulation)
    worker = start_worker()
    wait_for_events(model, len(events))
    wait_until_applied(config, advance(config, UNTIL), timeout=120)
    assert worker.stop() == 0
    counters = model.counters()

    expected, refused = expected_of(config, events, UNTIL)
    decoded = [decode_event(event.value, max_bytes=config.max_event_bytes) for event in events]
    rejected = [
        (event, item)
        for event, item in zip(events, decoded, strict=True)
        if not isinstance(item, Action)
    ]
    assert counters["events"] == len(events) - refused
    assert counters["dead_letters"] == refused == len(rejected) > 0
    assert counters["users"] >= len(expected)
    assert_store_matches(config, model, expected, UNTIL)

    dead = read_topic(config, config.dead_letter_topic)
    assert sorted(message.value() for message in dead) == sorted(
        event.value for event, _ in rejected
    )
    reasons = {message.value(): dict(message.headers())["reason"].decode() for message in dead}
    assert all(reasons[event.value] == item.reason for event, item in rejected)
    assert all(dict(message.headers())["detail"] for message in dead)

    changes = [
        orjson.loads(message.value()) for message in read_topic(config, config.changes_topic)
    ]
    assert counters["changes"] == len(changes)
    store = RedisStateStore(model.client, config.key_layout(), config.group_id)
    stored = dict(store.users())
    history = defaultdict(list)
    for change in changes:
        history[change["user_id"]].append(change)
    for user_id, (_, final) in expected.items():
        seen = history.get(user_id, [])
        assert [change["version"] for change in seen] == list(range(1, len(seen) + 1))
        segments: set[str] = set()
        for change in seen:
            assert not set(change["entered"]) & segments
            assert set(change["exited"]) <= segments
            segments = (segments | set(change["entered"])) - set(change["exited"])
            assert segments == set(change["segments"])
        assert segments == final
        assert stored[user_id].version == len(seen)


def test_profile_and_export_commands_read_what_the_worker_wrote(
    config, model, start_worker, tmp_path
):
    simulation = Simulation(users=40, seed=8)
    events = produce(config, simulation)
    worker = start_worker()
    wait_for_events(model, len(events))
    wait_until_applied(config, advance(config, UNTIL), timeout=120)
    worker.stop()
    expected, _ = expected_of(config, events, UNTIL)

    for user_id in sorted(expected)[:5]:
        shown = segstream(config, "profile", user_id)
        assert shown.returncode == 0, shown.stderr
        document = orjson.loads(shown.stdout)
        features, segments = expected[user_id]
        assert (document["user_id"], document["as_of"]) == (user_id, UNTIL)
        assert document["features"] == features
        assert set(document["segments"]) == segments

    missing = segstream(config, "profile", "nobody-at-all")
    assert missing.returncode == 1
    assert "no profile for user 'nobody-at-all'" in missing.stderr

    output = tmp_path / "profiles.jsonl"
    exported = segstream(config, "profiles", "export", "--output", str(output))
    assert exported.returncode == 0, exported.stderr
    rows = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert sorted(row["user_id"] for row in rows) == sorted(expected)
    assert set(rows[0]) == {
        "user_id",
        "features",
        "traits",
        "computed",
        "predictions",
        "segments",
        "cluster",
        "model_version",
        "as_of",
    }
    assert all(row["traits"] == {} for row in rows)  # the default rules compare no trait
    # no model has learned a prediction: each is gated
    assert all(row["predictions"] == dict.fromkeys(PREDICTIONS) for row in rows)


def test_a_killed_worker_resumes_from_the_offsets_committed_with_its_state(
    config, model, start_worker
):
    simulation = Simulation(users=100, seed=13, invalid_share=0.005)
    events = produce(config, simulation)
    rng = random.Random(1)
    for _ in range(2):
        worker = start_worker()
        wait_for_events(
            model,
            rng.randrange(len(events) // 4, len(events) // 2) if _ == 0 else len(events) * 2 // 3,
        )
        worker.kill()
    worker = start_worker()
    counters = wait_for_events(model, len(events))
    wait_until_applied(config, advance(config, UNTIL), timeout=120)
    worker.stop()

    expected, refused = expected_of(config, events, UNTIL)
    assert counters["events"] + counters["dead_letters"] == len(events)
    assert counters["dead_letters"] == refused
    assert_store_matches(config, model, expected, UNTIL)
