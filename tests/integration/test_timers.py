"""Time-driven transitions on the real pipeline: timers in Redis, fired as watermarks pass."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest
import redis
from confluent_kafka import Producer

from state.keys import KeyLayout
from state.timer_store import TimerStore
from streams.redis_clients import redis_client
from streams.tools.simulate import KafkaSink
from streams.tools.simulator import SimulatedEvent
from tests.integration.conftest import read_topic, wait_for_events

pytestmark = pytest.mark.integration


DAY = 86_400.0
T0 = datetime(2026, 9, 1, tzinfo=UTC).timestamp()


def track(user, number, name, moment, **properties):
    """A tracker's `track` event of `user` at `moment` (epoch seconds)."""
    body = {
        "type": "track",
        "event": name,
        "userId": user,
        "messageId": f"{user}-{number}",
        "timestamp": datetime.fromtimestamp(moment, UTC).isoformat(),
        "properties": properties,
    }
    return SimulatedEvent(moment, user.encode(), orjson.dumps(body))


def cart_add(user, number, moment, product="p1", price=30.0):
    return track(user, number, "Product Added", moment, product_id=product, price=price)


def order(user, number, moment, revenue=80.0):
    return track(user, number, "Order Completed", moment, revenue=revenue)


def send(settings, events, *, live=False):
    """Produce `events` in order; `live` ones carry no replay header, as trackers send them."""
    if not live:
        sink = KafkaSink(settings)
        for event in events:
            sink.write(event)
        sink.close()
        return
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for event in events:
        producer.produce(settings.events_topic, key=event.key, value=event.value)
    assert producer.flush(30) == 0


def bystanders(moment):
    """Page views at `moment` by 40 users, enough for every partition's watermark to move."""
    return [track(f"b{n}", 1, "Product Viewed", moment) for n in range(40)]


def changes_of(settings, user):
    """The user's change events, each version once (a crash may publish one twice)."""
    found = {}
    for message in read_topic(settings, settings.changes_topic):
        change = orjson.loads(message.value())
        if change["user_id"] == user:
            found.setdefault(change["version"], change)
    return [found[version] for version in sorted(found)]


def test_lapsing_and_abandoning_happen_as_event_time_passes(config, start_worker, model):
    """Only bystanders' events (on every partition) move time on; the others' transitions
    come from timers."""
    events = [
        order("lapser", 1, T0),
        cart_add("quick", 1, T0 + 60),
        order("quick", 2, T0 + 660),
        cart_add("leaver", 1, T0 + 120, product="p7", price=45.0),
        cart_add("leaver", 2, T0 + 180, product="p8", price=5.0),
    ]
    bystander = bystanders(T0 + 32 * DAY)
    worker = start_worker()
    send(config, events + bystander)
    wait_for_events(model, len(events) + len(bystander))

    lapser = changes_of(config, "lapser")
    lapsing = [change for change in lapser if "Lapsed Customers" in change["entered"]]
    assert len(lapsing) == 1
    assert lapsing[0]["reason"] == "time"
    # the first whole second days_since_last_order, kept to 4 decimals, exceeds 30
    assert T0 + 30 * DAY < lapsing[0]["event_time"] <= T0 + 30 * DAY + 9
    assert "Lapsed Customers" in model.user("lapser")["segments"]

    quick = changes_of(config, "quick")
    assert not [change for change in quick if "Cart Abandoners" in change["entered"]]

    leaver = changes_of(config, "leaver")
    abandoning = [change for change in leaver if "Cart Abandoners" in change["entered"]]
    assert len(abandoning) == 1
    entered = abandoning[0]
    assert (entered["reason"], entered["event_time"]) == ("time", T0 + 180 + 1800)
    assert entered["cart"]["value"] == 50.0
    assert {line["product_id"] for line in entered["cart"]["products"]} == {"p7", "p8"}
    assert model.counters()["timers_fired"] >= 3
    worker.stop()


def test_a_late_order_corrects_the_abandonment_announced_before_it(config, start_worker, model):
    """The firing clock passed the abandonment (a bystander at 10:31), then the order stamped
    10:29 came: the user leaves Cart Abandoners again, reason `late`, versions going on."""
    events = [
        cart_add("ann", 1, T0 + 10 * 3600, product="p7", price=45.0),
        *bystanders(T0 + 10 * 3600 + 31 * 60),
        order("ann", 2, T0 + 10 * 3600 + 29 * 60),
    ]
    worker = start_worker()
    send(config, events, live=True)
    wait_for_events(model, len(events))
    worker.stop()
    abandonment = T0 + 10 * 3600 + 30 * 60
    moves = [
        (c["version"], c["reason"], c["event_time"])
        for c in changes_of(config, "ann")
        if "Cart Abandoners" in c["entered"] + c["exited"]
    ]
    assert [(reason, at) for _, reason, at in moves] == [
        ("time", abandonment),
        ("late", abandonment),
    ]
    assert moves[1][0] == moves[0][0] + 1
    assert "Cart Abandoners" not in model.user("ann")["segments"]
    assert "Cart Abandoners" in changes_of(config, "ann")[-1]["exited"]


def test_a_sigkilled_worker_fires_the_timer_due_while_it_was_down(
    config, start_worker, model, tmp_path
):
    """Timers commit with the state: a successor fires the one its predecessor left pending."""
    settings = config.model_copy(update={"idle_watermark_seconds": 1})  # else the defaults
    delay = settings.firing_delay_seconds
    added = time.time() - 1800 - delay + 20  # the firing clock reaches it in 20 s
    worker = start_worker(settings)
    send(settings, [cart_add("shopper", 1, added)], live=True)
    wait_for_events(model, 1)
    timers = TimerStore(model.client, settings.key_layout(), settings.timer_shards)
    pending = timers.earliest(list(range(settings.partitions)))
    assert min(pending.values()) <= added + 1800
    worker.kill()  # the timer committed and pending, seconds before it is due
    assert changes_of(settings, "shopper")[-1]["entered"] == ["New Visitors"]
    time.sleep(max(0.0, added + 1800 + delay + 1 - time.time()))  # it comes due while down
    assert "Cart Abandoners" not in model.user("shopper")["segments"]
    successor = start_worker(settings)
    deadline = time.monotonic() + 60
    while "Cart Abandoners" not in (model.user("shopper") or {}).get("segments", []):
        assert time.monotonic() < deadline, "the timer never fired"
        time.sleep(0.2)
    successor.stop()
    entered = [c for c in changes_of(settings, "shopper") if "Cart Abandoners" in c["entered"]]
    assert len(entered) == 1
    assert entered[0]["reason"] == "time"
    assert entered[0]["cart"]["products"][0]["product_id"] == "p1"


def test_a_million_pending_timers_fit_in_100_mb(stack, config):
    """The store's own layout, written the way commits write it."""
    client = redis.Redis.from_url(stack.redis_url)
    keys = config.key_layout()
    store = TimerStore(client, keys, config.timer_shards)
    before = client.info("memory")["used_memory"]
    total, per_commit = 1_000_000, 250_000
    for start in range(0, total, per_commit):
        for partition in range(config.partitions):
            timers = {
                f"user-{number:07d}": int(T0) + number % 2_592_000
                for number in range(start + partition, start + per_commit, config.partitions)
            }
            with client.pipeline(transaction=True) as pipe:
                for command in store.writes(partition, timers):
                    pipe.execute_command(*command)
                pipe.execute()
    used = client.info("memory")["used_memory"] - before
    print(f"1,000,000 pending timers: {used / 1e6:.1f} MB in Redis")
    assert used <= 100e6
    watermarks = dict.fromkeys(range(config.partitions), T0 + 3_600)
    due = store.due(watermarks, limit=5_000)
    read = [entry for taken in due.values() for entry in taken.entries]
    assert sorted(read) == [(int(T0) + n, f"user-{n:07d}") for n in range(3_601)]
    assert all(taken.exhausted for taken in due.values())
    for partition in range(config.partitions):
        for key in client.scan_iter(match=f"{keys.timers(partition)}*", count=10_000):
            client.unlink(key)


def test_taking_due_timers_then_rescheduling_or_dropping_them_leaves_one_entry_each(stack, config):
    """A commit that takes due timers rewrites the rescheduled in place, removes the dropped,
    and leaves each shard's bound at its earliest timer left."""
    client = redis_client(config)
    keys = KeyLayout(config.redis_prefix, f"{config.events_topic}-rescheduled")
    store = TimerStore(client, keys, timer_shards := 8)
    start = int(T0)
    timers = {f"u{n}": start + n for n in range(20)}
    with client.pipeline(transaction=True) as pipe:
        for command in store.writes(0, timers):
            pipe.execute_command(*command)
        pipe.execute()
    taken = store.due({0: start + 9}, limit=100)[0]
    assert [user for _, user in taken.entries] == [f"u{n}" for n in range(10)]
    later = {f"u{n}": start + 100 + n for n in range(5)}  # u0-u4 rescheduled
    later |= dict.fromkeys([f"u{n}" for n in range(5, 8)])  # u5-u7 dropped; u8, u9 fired
    with client.pipeline(transaction=True) as pipe:
        for command in store.writes(0, later, taken):
            pipe.execute_command(*command)
        pipe.execute()
    left = {
        member.decode(): int(score)
        for shard in range(timer_shards)
        for member, score in client.zrange(keys.timer_shard(0, shard), 0, -1, withscores=True)
    }
    expected = {f"u{n}": start + n for n in range(10, 20)} | {
        f"u{n}": start + 100 + n for n in range(5)
    }
    assert left == expected
    due = store.due({0: start + 1_000}, limit=100)[0]
    assert sorted(due.entries) == sorted((moment, user) for user, moment in expected.items())
    assert store.earliest([0])[0] <= start + 10


def test_a_backlog_of_due_timers_never_stalls_the_batch_loop(config, start_worker, model):
    """Thousands of carts come due at once and fire a few a batch; an event sent once the
    first have fired is applied while most are still to fire."""
    per_batch = 5  # 1,600 batches of timers: a backlog that lasts, however fast the probe comes
    settings = config.model_copy(update={"timers_per_batch": per_batch})
    users = 8_000
    worker = start_worker(settings)
    send(settings, [cart_add(f"c{n:05d}", 1, T0 + n / 100) for n in range(users)])
    wait_for_events(model, users)
    probe_sink = KafkaSink(settings)  # connected before the clock starts
    started = time.monotonic()
    send(settings, bystanders(T0 + 7_200))
    while not model.counters().get("timers_fired"):
        assert time.monotonic() - started < 60, model.counters()
        time.sleep(0.01)
    probe_sink.write(track("probe", 1, "Product Viewed", T0 + 7_201))
    probe_sink.close()
    while model.segment_sizes().get("Cart Abandoners", 0) < users:
        assert time.monotonic() - started < 300, model.counters()
        time.sleep(0.2)
    drained = time.monotonic() - started
    changes = [orjson.loads(m.value()) for m in read_topic(settings, settings.changes_topic)]
    (probe,) = [change for change in changes if change["user_id"] == "probe"]
    abandoned = [change for change in changes if "Cart Abandoners" in change["entered"]]
    after_probe = sum(change["processed_at"] > probe["processed_at"] for change in abandoned)
    print(f"{users} due timers fired in {drained:.1f} s; {after_probe} after the probe's batch")
    assert len(abandoned) == users
    assert after_probe >= users // 2
    worker.stop()
