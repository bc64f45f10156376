"""A new generation built from the events topic's history by the running workers."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter

import orjson
import pytest
import requests
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from processors.rules import parse_rules
from state.read_model import ReadModel
from state.redis_store import RedisStateStore
from streams.generations import Build, publish_switch
from streams.kafka import admin_client
from streams.redis_clients import redis_client
from streams.rules_feed import in_force
from streams.tools.embedded import free_port
from streams.tools.simulate import KafkaSink
from streams.tools.simulator import SimulatedEvent
from tests.integration.conftest import (
    environment,
    export,
    isolated_settings,
    read_topic,
    segstream,
    wait_for_events,
    wait_until_serving,
)
from tests.integration.test_event_time import produce_events

pytestmark = pytest.mark.integration

V1 = """segments:
  - name: Pagers
    description: Viewed a page in the last 7 days.
    condition: {feature: page_views_7d, op: ">=", value: 1}
"""
V2 = """computed:
  views_30d: {event: Product Viewed, aggregate: count, window: 30d}
segments:
  - name: Viewers
    description: Viewed three products in 30 days.
    condition: {computed: views_30d, op: ">=", value: 3}
  - name: Added Then Bought
    description: Added to the cart, then ordered within a day.
    condition:
      sequence:
        - {event: Product Added}
        - {event: Order Completed}
      within: 1d
  - name: Pagers
    description: Viewed a page in the last 30 days.
    condition: {feature: page_views_30d, op: ">=", value: 1}
"""
START = 1_788_220_800  # 2026-09-01T00:00:00Z


def history(users: int, days: int, seed: int = 5, after: int = 0) -> list[SimulatedEvent]:
    """Each user's page views, product views, cart adds and orders over `days` days from
    `after` days past the start, in event-time order (one message key per user)."""
    rng = random.Random(seed)
    events = []
    begins = START + after * 86_400
    for n in range(users):
        user = f"u{n:03d}"
        moment = begins + rng.randrange(86_400)
        number = 0
        while moment < begins + days * 86_400:
            kind = rng.choice(["page", "Product Viewed", "Product Viewed", "Product Added"])
            if kind == "Product Added" and rng.random() < 0.4:
                kind = "Order Completed"
            body: dict[str, object] = {
                "userId": user,
                "messageId": f"{user}-{after}-{number}",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment)),
            }
            if kind == "page":
                body["type"] = "page"
            else:
                body |= {"type": "track", "event": kind, "properties": {"revenue": 20}}
            events.append((moment, SimulatedEvent(0.0, user.encode(), orjson.dumps(body))))
            number += 1
            moment += rng.randrange(600, 3 * 86_400)
    return [event for _, event in sorted(events, key=lambda pair: pair[0])]


def documents(settings, keys, text):
    """Every profile of the generation at `keys`, as `profiles export` writes them."""
    model = ReadModel(redis_client(settings), keys, parse_rules(text))
    return sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in model.users())


def settings_for(stack, rules_file, **changes):
    """Isolated settings whose clocks follow only events (the runs compared see the same)."""
    update = {"idle_watermark_seconds": 0, "rules_file": rules_file, **changes}
    return isolated_settings(stack).model_copy(update=update)


def labels(settings, keys):
    """Each user's segments and version in the generation at `keys`."""
    store = RedisStateStore(redis_client(settings), keys, "")
    return {user_id: (tuple(user.segments), user.version) for user_id, user in store.users()}


def switched(settings):
    """The change events published for the switch to new rules."""
    changes = map(orjson.loads, (m.value() for m in read_topic(settings, settings.changes_topic)))
    return [change for change in changes if change["reason"] == "rules"]


def told_once(settings, users, deadline):
    """The switch's change events, once there is one for each of `users`; asserts there is
    exactly one each, and none for anyone else."""
    while len(switched(settings)) < len(users):
        assert time.monotonic() < deadline, "the users who moved were not told"
        time.sleep(0.2)
    time.sleep(1)
    changes = switched(settings)
    assert sorted(c["user_id"] for c in changes) == sorted(users)
    return changes


def assert_moves_count_the_published_changes(settings):
    """The console's moves (`state.activity`) count each published change once (a batch
    redone after a kill publishes its changes again, with the same versions), and none of
    those a rebuild replayed."""
    client = redis_client(settings)
    keys = settings.key_layout()
    counted: Counter[str] = Counter()
    for partition in range(settings.partitions):
        for name, count in client.hgetall(keys.moves(partition)).items():
            counted[name.decode()] += int(count)
    published = map(orjson.loads, (m.value() for m in read_topic(settings, settings.changes_topic)))
    expected: Counter[str] = Counter()
    for change in {(c["user_id"], c["version"]): c for c in published}.values():
        expected.update(f"+{segment}" for segment in change["entered"])
        expected.update(f"-{segment}" for segment in change["exited"])
    assert counted == expected


def built_events(settings, keys):
    counters = ReadModel(redis_client(settings), keys).counters()
    return sum(counters.get(name, 0) for name in ("events", "duplicates", "dead_letters"))


def test_a_build_from_history_equals_a_run_from_scratch_through_kills_and_rebalances(
    stack, start_worker, tmp_path
):
    events = history(users=200, days=60)
    (tmp_path / "v1.yaml").write_text(V1)
    (tmp_path / "v2.yaml").write_text(V2)
    # small batches: the build takes long enough to be killed twice on the way
    live = settings_for(stack, tmp_path / "v1.yaml", batch_max_events=100)
    produce_events(live, events)
    worker = start_worker(live)
    start_worker(live)  # a second one: each kill below moves partitions between the two
    wait_for_events(ReadModel(redis_client(live), live.key_layout()), len(events))
    changes_before = len(read_topic(live, live.changes_topic))

    applying = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams",
            "rules",
            "apply",
            str(tmp_path / "v2.yaml"),
            "--backfill",
        ],
        env=environment(live),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    built = live.key_layout().of_generation(1)  # the deployment's first build
    for _ in range(2):
        deadline = time.monotonic() + 60
        done = built_events(live, built)
        while built_events(live, built) < done + 500:
            assert time.monotonic() < deadline, "the build did not go on"
            time.sleep(0.05)
        worker.kill()
        assert built_events(live, built) < len(events), "the build ended before the kill"
        worker = start_worker(live)
    wait_for_events(ReadModel(redis_client(live), built), len(events))

    reference = settings_for(stack, tmp_path / "v2.yaml")
    produce_events(reference, events)
    start_worker(reference)
    wait_for_events(ReadModel(redis_client(reference), reference.key_layout()), len(events))

    rebuilt = documents(live, built, V2)
    assert len(rebuilt) == 200
    assert rebuilt == documents(reference, reference.key_layout(), V2)
    assert any(b'"Viewers"' in d for d in rebuilt)
    assert any(b'"Added Then Bought"' in d for d in rebuilt)
    published = map(orjson.loads, (m.value() for m in read_topic(live, live.changes_topic)))
    assert sum(change["reason"] != "rules" for change in published) == changes_before

    # the switch: published by a worker once the build caught up, followed by every reader;
    # one change each for the users whose segments differ, versions continuing theirs
    seen = labels(live, live.key_layout())
    now = labels(reference, reference.key_layout())
    differ = {user for user in seen if seen[user][0] != now[user][0]}
    assert differ
    deadline = time.monotonic() + 60
    out, err = applying.communicate(timeout=120)
    assert applying.returncode == 0, err
    assert "Redis while both generations exist: about 200 users of" in out
    assert "rules v1 are served from generation 1" in out
    assert in_force(live).generation == 1
    for change in told_once(live, differ, deadline):
        user = change["user_id"]
        assert change["version"] == seen[user][1] + 1
        assert change["segments"] == list(now[user][0])
        assert change["rules_version"] == "v1"
    assert export(live) == export(reference)
    replaced = f"{live.redis_prefix}:{{{live.events_topic}.*"
    while any(redis_client(live).scan_iter(match=replaced)):
        assert time.monotonic() < deadline + 30, "the replaced generation's keys stayed"
        time.sleep(0.5)

    # rules published later without --backfill are served from the same generation
    again = segstream(live, "rules", "apply", str(tmp_path / "v2.yaml"))
    assert again.returncode == 0, again.stderr
    assert in_force(live).generation == 1
    assert export(live) == export(reference)
    assert labels(live, built) == {u: (now[u][0], seen[u][1] + (u in differ)) for u in seen}
    assert_moves_count_the_published_changes(live)


def test_a_backfill_is_refused_when_the_topic_lost_history_the_rules_read(
    stack, start_worker, tmp_path
):
    settings = settings_for(stack, tmp_path / "v1.yaml", api_port=free_port(), api_tokens="tok-1")
    (tmp_path / "v1.yaml").write_text(V1)
    (tmp_path / "v2.yaml").write_text(V2)
    produce_events(settings, history(users=20, days=40))
    # a week's retention, and the first five messages of partition 0 deleted
    week = ConfigEntry("retention.ms", "604800000", incremental_operation=AlterConfigOpType.SET)
    topic = ConfigResource(ResourceType.TOPIC, settings.events_topic, incremental_configs=[week])
    admin = admin_client(settings)
    admin.incremental_alter_configs([topic])[topic].result()
    first = TopicPartition(settings.events_topic, 0, 5)
    admin.delete_records([first])[first].result()

    refused = segstream(settings, "rules", "apply", str(tmp_path / "v2.yaml"), "--backfill")
    assert refused.returncode == 1
    assert refused.stderr.startswith("refused: retention.ms is 604800000 (7 days) and the ")
    assert "earliest retained event is from 2026-09-" in refused.stderr
    assert "the rules read 31 days 1 h back (--accept-partial-history builds anyway)" in (
        refused.stderr
    )

    started = segstream(
        settings,
        *("rules", "apply", str(tmp_path / "v2.yaml"), "--backfill"),
        *("--accept-partial-history", "--no-wait"),
    )
    assert started.returncode == 0, started.stderr
    assert "not exact: Viewers, Added Then Bought, Pagers" in started.stderr
    assert "building generation 1 for rules v1" in started.stdout
    status = segstream(settings, "rules", "status")
    assert status.returncode == 0, status.stderr
    assert "served from generation 0" in status.stdout
    assert "building generation 1 for rules v1: 0 of " in status.stdout
    assert "not exact for lack of history: Viewers, Added Then Bought, Pagers" in status.stdout

    api = start_worker(settings, "api")
    url = f"http://127.0.0.1:{settings.api_port}"
    wait_until_serving(f"{url}/readyz", api)
    deadline = time.monotonic() + 30
    while True:
        listed = requests.get(
            f"{url}/v1/segments", headers={"Authorization": "Bearer tok-1"}, timeout=5
        ).json()
        if listed["building"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert listed["generation"] == 0
    building = listed["building"]
    assert building["generation"] == 1
    assert building["rules_version"] == "v1"
    assert building["built"] == 0
    assert building["total"] > 0
    assert building["partial"] == ["Viewers", "Added Then Bought", "Pagers"]

    # a second build replaces the first
    again = segstream(
        settings,
        *("rules", "apply", str(tmp_path / "v1.yaml"), "--backfill"),
        *("--accept-partial-history", "--no-wait"),
    )
    assert again.returncode == 0, again.stderr
    assert "building generation 2 for rules v2" in again.stdout
    status = segstream(settings, "rules", "status")
    assert "building generation 2 for rules v2: 0 of " in status.stdout
    assert "not exact for lack of history: Pagers" in status.stdout


def test_a_rebuild_while_events_flow_loses_none_applies_none_twice_and_switches_in_flight(
    stack, start_worker, tmp_path
):
    events = history(users=120, days=60)
    later = history(users=120, days=40, seed=9, after=60)  # what arrives while it builds
    (tmp_path / "v1.yaml").write_text(V1)
    (tmp_path / "v2.yaml").write_text(V2)
    live = settings_for(stack, tmp_path / "v1.yaml", batch_max_events=200)
    produce_events(live, events)
    start_worker(live)
    wait_for_events(ReadModel(redis_client(live), live.key_layout()), len(events))

    flowing, stop = threading.Event(), threading.Event()
    sent: list[SimulatedEvent] = []

    def flow() -> None:
        sink = KafkaSink(live)
        for event in later:
            sink.write(event)
            sent.append(event)
            if len(sent) % 20 == 0:
                sink.producer.flush(10)
                flowing.set()
                if stop.wait(0.1):
                    break
        sink.close()

    producer = threading.Thread(target=flow)
    producer.start()
    assert flowing.wait(30)
    applied = segstream(
        live, "rules", "apply", str(tmp_path / "v2.yaml"), "--backfill", timeout=120
    )
    assert applied.returncode == 0, applied.stderr
    switched_while_flowing = producer.is_alive()
    time.sleep(1)  # and on after it
    stop.set()
    producer.join()
    assert switched_while_flowing, "the events stopped before the switch"
    later = sent
    built = live.key_layout().of_generation(1)
    wait_for_events(ReadModel(redis_client(live), built), len(events) + len(later))

    reference = settings_for(stack, tmp_path / "v2.yaml")
    produce_events(reference, [*events, *later])
    start_worker(reference)
    wait_for_events(
        ReadModel(redis_client(reference), reference.key_layout()), len(events) + len(later)
    )
    assert documents(live, built, V2) == documents(reference, reference.key_layout(), V2)
    counters = ReadModel(redis_client(live), built).counters()
    assert counters["events"] == len(events) + len(later)
    assert counters.get("duplicates", 0) == 0
    versions: dict[str, list[int]] = {}
    for message in read_topic(live, live.changes_topic):
        change = orjson.loads(message.value())
        versions.setdefault(change["user_id"], []).append(change["version"])
    for user, seen in versions.items():
        assert seen == sorted(set(seen)), f"{user}'s versions went {seen}"


def test_a_worker_that_finds_the_switch_unfinished_finishes_it_before_any_event(
    stack, start_worker, tmp_path
):
    # what a worker stopped mid-switch leaves: the rebuilt generation current, its users
    # not yet given the labels readers saw
    events = history(users=80, days=40)
    (tmp_path / "v1.yaml").write_text(V1)
    (tmp_path / "v2.yaml").write_text(V2)
    live = settings_for(stack, tmp_path / "v1.yaml")
    produce_events(live, events)
    worker = start_worker(live)
    wait_for_events(ReadModel(redis_client(live), live.key_layout()), len(events))
    assert worker.stop() == 0
    built = live.key_layout().of_generation(1)
    # generation 1 as a build leaves it: the same events taken with v2 by another
    # deployment, its keys copied under generation 1's names
    rebuilding = settings_for(stack, tmp_path / "v2.yaml", events_topic=live.events_topic)
    helper = start_worker(rebuilding)
    wait_for_events(ReadModel(redis_client(rebuilding), rebuilding.key_layout()), len(events))
    assert helper.stop() == 0
    client = redis_client(live)
    for key in client.scan_iter(match=f"{rebuilding.redis_prefix}:{{*"):
        name = key.decode().replace(f"{rebuilding.redis_prefix}:", f"{live.redis_prefix}:g1:", 1)
        name = name.replace(f":o:{rebuilding.group_id}", f":o:{live.group_id}")
        assert client.copy(key, name)
    seen = labels(live, live.key_layout())
    now = labels(live, built)
    differ = {user for user in seen if seen[user][0] != now[user][0]}
    assert differ
    publish_switch(live, Build(1, 1, V2, time.time()), replaces=0)

    start_worker(live)
    deadline = time.monotonic() + 60
    changes = told_once(live, differ, deadline)
    assert all(c["version"] == seen[c["user_id"]][1] + 1 for c in changes)
    assert labels(live, built) == {u: (now[u][0], seen[u][1] + (u in differ)) for u in seen}
    marks = redis_client(live).mget([built.adopted(p) for p in range(live.partitions)])
    assert marks == [b"0"] * live.partitions
    replaced = f"{live.redis_prefix}:{{{live.events_topic}.*"
    while any(redis_client(live).scan_iter(match=replaced)):
        assert time.monotonic() < deadline + 30, "the replaced generation's keys stayed"
        time.sleep(0.5)
