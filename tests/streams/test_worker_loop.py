"""The worker's loop against in-memory parts: no broker, no Redis, seconds to run."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from processors._core import User
from processors.model import FEATURE_INDEX
from processors.partitioner import canonical_partition
from processors.rules import parse_rules
from processors.vectors import unpack_vectors
from processors.wire import (
    ADVANCE_WATERMARK,
    CONTROL_HEADER,
    ERASE,
    RELAY_HEADER,
    ROUTE,
    SOURCE_HEADER,
    advance_body,
)
from streams.rules_feed import InForce, load_rules
from streams.settings import Settings
from streams.worker.loop import PartitionCountError, Worker
from streams.worker.parts import WorkerParts
from tests.memory import (
    MemoryBroker,
    MemoryConsumer,
    MemoryFeed,
    MemoryProducer,
    MemoryStore,
)

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
SETTINGS = Settings(partitions=4, idle_watermark_seconds=0, batch_max_events=1_000)
TOPIC = SETTINGS.events_topic


class Rig:
    """A worker on in-memory parts, and what it works with."""

    def __init__(self, broker=None, store=None, rules=None, settings=SETTINGS):
        self.broker = broker or MemoryBroker(partitions=4)
        self.store = store or MemoryStore()
        self.consumer = MemoryConsumer(self.broker)
        self.producer = MemoryProducer(self.broker)
        self.rules = MemoryFeed()
        self.models = MemoryFeed()
        parts = WorkerParts(
            store=self.store,
            consumer=self.consumer,
            make_producer=lambda: self.producer,
            rules=self.rules,
            models=self.models,
            ping=lambda: True,
        )
        self.worker = Worker(settings, rules or load_rules(settings), parts)
        self.broker.topic(TOPIC)
        self.worker.start()

    def run(self, turns=3):
        stop = threading.Event()
        for _ in range(turns):
            self.worker.step(0, stop)

    def user(self, user_id):
        return User.from_bytes(self.store.states[user_id])


def event(user, message_id, minutes, kind="page", **fields):
    body = {
        "type": kind,
        "userId": user,
        "messageId": message_id,
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
        **fields,
    }
    return orjson.dumps(body)


def other_partition(user):
    return (canonical_partition(user, 4) + 1) % 4


def test_events_are_applied_dead_lettered_or_forwarded_to_their_users_partition():
    rig = Rig()
    home = canonical_partition("ann", 4)
    rig.broker.append(TOPIC, event("ann", "m1", 0), key=b"ann")
    rig.broker.append(TOPIC, event("ann", "m2", 1), partition=other_partition("ann"))
    rig.broker.append(TOPIC, b'{"type": "page"', key=b"ann")
    rig.broker.append(TOPIC, event("ann", "m3", -120), key=b"ann")  # two hours late
    rig.run()
    assert rig.user("ann").events == 2
    routed = [m for m in rig.broker.messages(TOPIC) if m.headers()]
    assert [(m.partition(), dict(m.headers())[RELAY_HEADER]) for m in routed] == [(home, ROUTE)]
    source = dict(routed[0].headers())[SOURCE_HEADER]
    assert source == f"{other_partition('ann')}:0:0".encode()
    letters = rig.broker.messages(SETTINGS.dead_letter_topic)
    assert sorted(dict(m.headers())["reason"] for m in letters) == [b"invalid_json", b"late"]
    assert rig.store.counters["forwarded"] == 1
    assert rig.store.counters["relays_sent"] == rig.store.counters["relays_applied"] == 1


def test_a_forwarded_event_produced_twice_is_applied_once():
    rig = Rig()
    home = canonical_partition("bo", 4)
    body = event("bo", "m1", 0)
    relay = [(RELAY_HEADER, ROUTE), (SOURCE_HEADER, b"3:17")]
    rig.broker.append(TOPIC, body, key=b"bo", partition=home, headers=relay)
    rig.broker.append(TOPIC, body, key=b"bo", partition=home, headers=relay)
    rig.run()
    assert rig.user("bo").events == 1
    assert rig.store.counters["relays_applied"] == 1


def test_a_fenced_batch_is_dropped_and_the_partition_rewound():
    rig = Rig()
    home = canonical_partition("cy", 4)
    rig.broker.append(TOPIC, event("cy", "m1", 0), key=b"cy")
    rig.run(1)
    committed = rig.store.offsets[home]
    # Another worker took the partition and committed further meanwhile.
    rig.store.offsets[home] = type(committed)(committed.offset + 1, 0.0, -1.0, -1.0)
    rig.broker.append(TOPIC, event("cy", "m2", 1), key=b"cy")
    rig.run(1)
    assert rig.user("cy").events == 1  # the fenced batch wrote nothing
    assert rig.worker.owned[home].committed == committed.offset + 1  # rewound to the store's
    assert rig.consumer.positions[home] == committed.offset + 1


@pytest.mark.parametrize("failure", ["produce", "commit"])
def test_a_batch_that_could_not_be_written_is_redone_from_the_committed_offsets(failure):
    rig = Rig()
    for index in range(5):
        rig.broker.append(TOPIC, event("dee", f"m{index}", index), key=b"dee")
    if failure == "produce":
        rig.producer.fail_next_flush = True
    else:
        rig.store.fail_next_commit = True
    rig.run(3)
    assert rig.worker.probe.ready
    assert rig.user("dee").events == 5
    assert rig.store.counters["events"] == 5
    changes = [orjson.loads(m.value()) for m in rig.broker.messages(SETTINGS.changes_topic)]
    versions = sorted({change["version"] for change in changes})
    assert versions == list(range(1, len(versions) + 1))  # a redone batch repeats, never skips


def test_new_rules_with_reevaluation_relabel_every_owned_user_now():
    rig = Rig()
    for index, user in enumerate(("eve", "fay")):
        rig.broker.append(TOPIC, event(user, f"m{index}", index), key=user.encode())
    rig.run(1)
    rules = parse_rules(
        "segments:\n  - {name: Visitors, description: anyone,"
        " condition: {feature: events_lifetime, op: '>=', value: 1}}\n"
    )
    rig.rules.publish(InForce(rules, True))
    rig.run(1)
    relabelled = [
        orjson.loads(m.value())
        for m in rig.broker.messages(SETTINGS.changes_topic)
        if orjson.loads(m.value())["reason"] == "rules"
    ]
    assert sorted(change["user_id"] for change in relabelled) == ["eve", "fay"]
    assert all(change["entered"] == ["Visitors"] for change in relabelled)
    assert rig.store.members["Visitors"] == {"eve", "fay"}


def test_timers_fire_as_the_watermark_passes_them():
    rig = Rig()
    home = canonical_partition("gil", 4)
    added = {"product_id": "p1", "price": 20, "quantity": 1}
    rig.broker.append(
        TOPIC, event("gil", "m1", 0, "track", event="Product Added", properties=added), key=b"gil"
    )
    rig.run(1)
    assert rig.store.timers[home]["gil"] > 0
    until = (T0 + timedelta(hours=2)).timestamp()
    rig.broker.append(
        TOPIC,
        advance_body(until),
        partition=home,
        headers=[(CONTROL_HEADER, ADVANCE_WATERMARK)],
    )
    rig.run(2)
    timed = [
        orjson.loads(m.value())
        for m in rig.broker.messages(SETTINGS.changes_topic)
        if orjson.loads(m.value())["reason"] == "time"
    ]
    assert any("Cart Abandoners" in change["entered"] for change in timed), timed
    assert rig.store.counters["timers_fired"] >= 1


def test_a_cart_is_abandoned_by_the_firing_clock_and_expiry_waits_for_the_watermark():
    """With a day of retention: the abandonment fires 5 s after its moment, but the idle
    user expires only once the watermark (an hour behind) passes their retention."""
    settings = SETTINGS.model_copy(update={"retention_days": 1})
    rig = Rig(settings=settings)
    home = canonical_partition("gil", 4)
    other = next(u for u in (f"u{n}" for n in range(100)) if canonical_partition(u, 4) == home)
    added = {"product_id": "p1", "price": 20, "quantity": 1}

    def on_home(user, number, minutes, **fields):
        rig.broker.append(
            TOPIC, event(user, f"{user}-{number}", minutes, **fields), key=user.encode()
        )
        rig.run(2)
        return [
            (change["reason"], change["entered"], change["exited"])
            for m in rig.broker.messages(settings.changes_topic)
            if (change := orjson.loads(m.value()))["user_id"] == "gil"
        ]

    on_home("gil", 1, 0, kind="track", event="Product Added", properties=added)
    assert ("time", ["Cart Abandoners"], []) not in on_home(other, 1, 30)  # 30 m: the moment
    assert ("time", ["Cart Abandoners"], []) in on_home(other, 2, 30 + 5 / 60)  # 5 s after
    day = 24 * 60
    on_home(other, 3, day + 59)  # retention passed for the firing clock, not the watermark
    assert "gil" in rig.store.states
    changes = on_home(other, 4, day + 61)
    assert changes[-1][0] == "expired"
    assert "gil" not in rig.store.states


@pytest.mark.parametrize(("interval_ms", "sent"), [(60_000, [3]), (0, [1, 2, 3])])
def test_the_trainer_gets_a_users_latest_vector_once_an_interval_however_events_batch(
    interval_ms, sent
):
    rig = Rig(settings=SETTINGS.model_copy(update={"vector_interval_ms": interval_ms}))
    for index in range(3):
        rig.broker.append(TOPIC, event("hal", f"m{index}", index), key=b"hal")
        rig.run(1)
    rig.worker.close()  # sends what the feed holds
    vectors = [
        vector
        for message in rig.broker.messages(SETTINGS.features_topic)
        for vector in unpack_vectors(message.value())
    ]
    assert [vector.user_id for vector in vectors] == ["hal"] * len(sent)
    assert [vector.values[FEATURE_INDEX["events_lifetime"]] for vector in vectors] == sent


def test_due_timers_are_read_once_the_watermark_reaches_the_partitions_next_timer():
    rig = Rig()
    home = canonical_partition("ivy", 4)
    cart = {"event": "Product Added", "properties": {"product_id": "p1", "price": 20}}
    rig.broker.append(TOPIC, event("ivy", "m1", 0, "track", **cart), key=b"ivy")
    rig.run(2)  # the first commit, then a reading that finds ivy's timer not yet due
    rig.store.asked.clear()
    rig.broker.append(TOPIC, event("ivy", "m2", 1), key=b"ivy")
    rig.run(2)
    assert not any(home in asked for asked in rig.store.asked)
    # A cart of another user of the partition, 3 s older than ivy's, schedules an earlier timer.
    other = next(u for u in (f"u{n}" for n in range(100)) if canonical_partition(u, 4) == home)
    rig.broker.append(TOPIC, event(other, "m3", -0.05, "track", **cart), key=other.encode())
    rig.run(1)
    earlier, later = rig.store.timers[home][other], rig.store.timers[home]["ivy"]
    assert earlier < later
    rig.broker.append(
        TOPIC,
        advance_body(earlier + (later - earlier) / 2),
        partition=home,
        headers=[(CONTROL_HEADER, ADVANCE_WATERMARK)],
    )
    rig.run(2)
    assert any(home in asked for asked in rig.store.asked)
    timed = [
        orjson.loads(m.value())
        for m in rig.broker.messages(SETTINGS.changes_topic)
        if orjson.loads(m.value())["reason"] == "time"
    ]
    assert [change["user_id"] for change in timed] == [other]


def test_a_topic_with_another_partition_count_than_the_state_is_refused():
    store = MemoryStore()
    store.claim_partition_count(8)
    with pytest.raises(PartitionCountError, match=r"has 4 partitions.*built with 8"):
        Rig(store=store)


def test_erasing_a_user_erases_every_id_merged_with_them_even_two_on_one_partition():
    rig = Rig()
    anonymous = ["anon-6", "anon-16"]  # both on partition 3, "zed" on 2
    assert {canonical_partition(a, 4) for a in anonymous} == {3}
    for index, anon in enumerate(anonymous):
        page = orjson.dumps(
            {
                "type": "page",
                "anonymousId": anon,
                "messageId": f"p{index}",
                "timestamp": (T0 + timedelta(minutes=index)).isoformat(),
            }
        )
        rig.broker.append(TOPIC, page, key=anon.encode())
        rig.broker.append(
            TOPIC,
            event("zed", f"i{index}", 5 + index, "identify", anonymousId=anon),
            key=b"zed",
        )
    rig.run(6)
    assert all(rig.user(anon).alias_of == "zed" for anon in anonymous)
    rig.broker.append(TOPIC, b"", key=b"zed", headers=[(CONTROL_HEADER, ERASE)])
    rig.run(6)
    assert {"zed", *anonymous}.isdisjoint(rig.store.states)
