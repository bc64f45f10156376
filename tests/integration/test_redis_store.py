"""The Redis store's commit on a real Redis: fenced MULTI/EXEC transactions, quiet
partitions sharing one."""

from __future__ import annotations

import math

import orjson
import pytest
import redis

from state.redis_store import RedisStateStore
from state.store import BatchCommit, Counters, PartitionCommit, PartitionProgress
from state.timer_store import Command
from tests.integration.conftest import isolated_settings
from tests.processors.test_commit_writes import stepped_changes

pytestmark = pytest.mark.integration


def test_a_commit_writes_a_partition_whole_and_a_stale_one_is_fenced(stack):
    settings = isolated_settings(stack)
    client = redis.Redis.from_url(settings.redis_url)
    keys = settings.key_layout()
    store = RedisStateStore(client, keys, settings.group_id, timer_shards=8)
    users = [f"user-{n:05d}" for n in range(2_500)]
    first = PartitionCommit(
        1,
        None,
        PartitionProgress(10, 1700.5, 1690.5, 1690.5),
        rows={user: b"row-" + user.encode() for user in users},
        counters=Counters(events=2_500, users=2_500),
        new_users=users,
        timers={user: 1_700_000_000 + n for n, user in enumerate(users)},
    )
    assert store.commit(BatchCommit([first], "r1")) == {}
    assert store.progress([1]) == {1: PartitionProgress(10, 1700.5, 1690.5, 1690.5)}
    assert store.rows({1: users}) == {user: b"row-" + user.encode() for user in users}
    assert client.scard(keys.partition_users(1)) == 2_500
    assert int(client.hget(keys.counters(1), "events")) == 2_500
    due = store.due_timers({1: 1_700_000_009}, limit=100)[1].entries
    assert due == [(1_700_000_000 + n, users[n]) for n in range(10)]
    client.script_flush()  # as after a restart: the due-timer script is sent again
    due = store.due_timers({0: 1_700_000_009, 1: 1_700_000_004}, limit=100)
    assert due[1].entries == [(1_700_000_000 + n, users[n]) for n in range(5)]
    assert due[1].exhausted
    assert due[1].after == 1_700_000_005  # when the next one is due
    assert due[0].entries == []
    assert due[0].after == math.inf  # a partition without timers

    stale = PartitionCommit(
        1, None, PartitionProgress(20, 1800.0, 1790.0, 1790.0), rows={"x": b"x"}
    )
    assert store.commit(BatchCommit([stale], "r1")) == {
        1: "at offset 10, this worker expected None"
    }
    expired = PartitionCommit(
        1, 10, PartitionProgress(20, 1800.0, 1790.0, 1790.0), expired_users=users[:1_500]
    )
    assert store.commit(BatchCommit([expired], "r1")) == {}
    assert store.progress([1])[1].offset == 20
    assert not client.exists(keys.state(1, "x"))
    assert len(store.rows({1: users})) == 1_000
    assert client.scard(keys.partition_users(1)) == 1_000


class _Overtaken(RedisStateStore):
    """A store whose first transaction sees another worker commit `partition` meanwhile."""

    def __init__(self, client: redis.Redis, other: redis.Redis, partition: int, **kw) -> None:
        super().__init__(client, **kw)
        self.other, self.partition, self.overtaken = other, partition, False

    def _writes(self, part: PartitionCommit, rules_version: str) -> list[Command]:
        if not self.overtaken:
            self.overtaken = True
            progress = PartitionProgress(7, 50.0, 40.0, 40.0).encode()
            self.other.set(self.keys.offset(self.partition, self.group), progress)
        return super()._writes(part, rules_version)


def test_quiet_partitions_share_a_transaction_and_a_fenced_one_leaves_the_others(stack):
    settings = isolated_settings(stack)
    client = redis.Redis.from_url(settings.redis_url)
    keys = settings.key_layout()
    store = RedisStateStore(client, keys, settings.group_id, timer_shards=8)

    def part(number: int, start: int | None) -> PartitionCommit:
        user = f"user-{number}"
        return PartitionCommit(
            number,
            start,
            PartitionProgress(5, 10.0, 0.0, 0.0),
            rows={user: b"row"},
            counters=Counters(events=1),
            new_users=[user],
        )

    # partition 2 already has progress another worker wrote: it alone is fenced
    client.set(keys.offset(2, settings.group_id), PartitionProgress(3, 5.0, 0.0, 0.0).encode())
    assert store.commit(BatchCommit([part(n, None) for n in range(4)], "r1")) == {
        2: "at offset 3, this worker expected None"
    }
    assert {n: p.offset for n, p in store.progress(range(4)).items()} == {0: 5, 1: 5, 2: 3, 3: 5}
    assert store.rows({n: [f"user-{n}"] for n in range(4)}) == {
        "user-0": b"row",
        "user-1": b"row",
        "user-3": b"row",
    }

    # partition 1 is committed by another worker between WATCH and EXEC: the shared
    # transaction fails, and each partition tried alone tells which one moved
    racing = _Overtaken(
        client, redis.Redis.from_url(settings.redis_url), 1, keys=keys, group=settings.group_id
    )
    assert racing.commit(BatchCommit([part(0, 5), part(1, 5), part(3, 5)], "r1")) == {
        1: "at offset 7, this worker expected 5"
    }
    assert {n: p.offset for n, p in racing.progress([0, 1, 3]).items()} == {0: 5, 1: 7, 3: 5}
    assert int(client.hget(keys.counters(0), "events")) == 2
    assert int(client.hget(keys.counters(1), "events")) == 1


def test_nothing_is_written_until_ready_returns_and_it_is_called_once(stack):
    settings = isolated_settings(stack)
    client = redis.Redis.from_url(settings.redis_url)
    store = RedisStateStore(client, settings.key_layout(), settings.group_id, timer_shards=8)
    # two partitions with many rows each: two transactions, one wait for the broker
    parts = [
        PartitionCommit(
            number,
            None,
            PartitionProgress(5, 10.0, 0.0, 0.0),
            rows={f"user-{number}-{n}": b"row" for n in range(2_000)},
            counters=Counters(events=2_000),
        )
        for number in (0, 1)
    ]
    wanted = {number: [f"user-{number}-{n}" for n in range(2_000)] for number in (0, 1)}

    def refuse() -> None:
        raise RuntimeError("the broker did not acknowledge the changes")

    with pytest.raises(RuntimeError):
        store.commit(BatchCommit(parts, "r1"), refuse)
    assert store.progress([0, 1]) == {}
    assert store.rows(wanted) == {}

    calls: list[dict[int, PartitionProgress]] = []
    assert (
        store.commit(BatchCommit(parts, "r1"), lambda: calls.append(store.progress([0, 1]))) == {}
    )
    assert calls == [{}]  # once, before the first transaction wrote
    assert {n: p.offset for n, p in store.progress([0, 1]).items()} == {0: 5, 1: 5}
    assert len(store.rows(wanted)) == 4_000


def test_a_command_redis_refuses_raises_and_the_next_commit_goes_through(stack):
    settings = isolated_settings(stack)
    client = redis.Redis.from_url(settings.redis_url, max_connections=1)
    keys = settings.key_layout()
    store = RedisStateStore(client, keys, settings.group_id, timer_shards=8)

    def part(start: int | None, offset: int) -> PartitionCommit:
        return PartitionCommit(
            0, start, PartitionProgress(offset, 10.0, 0.0, 0.0), counters=Counters(events=1)
        )

    client.set(keys.counters(0), "not a hash")  # HINCRBY on it fails inside EXEC
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.commit(BatchCommit([part(None, 5)], "r1"))
    client.delete(keys.counters(0))
    # the one connection of the pool answers again, with no reply of the failed one left
    assert store.progress([0]) == {0: PartitionProgress(5, 10.0, 0.0, 0.0)}
    assert store.commit(BatchCommit([part(5, 6)], "r1")) == {}
    assert store.progress([0])[0].offset == 6
    assert int(client.hget(keys.counters(0), "events")) == 1


def test_a_users_change_log_keeps_the_latest_changes_on_a_real_redis(stack):
    """Logs are trimmed only past `user_changes_kept` versions (`pack_activity`): every
    user's log holds their latest changes, at most that many."""
    settings = isolated_settings(stack)
    client = redis.Redis.from_url(settings.redis_url)
    keys = settings.key_layout()
    store = RedisStateStore(client, keys, settings.group_id, timer_shards=8, user_changes_kept=2)
    changes = stepped_changes()
    first = PartitionCommit(
        0, None, PartitionProgress(5, 10.0, 0.0, 0.0), changes=changes, recorded=True
    )
    assert store.commit(BatchCommit([first], "r1")) == {}
    versions: dict[str, list[int]] = {}
    for change in changes:
        versions.setdefault(change.user_id, []).append(change.version)
    assert max(len(v) for v in versions.values()) > 2  # some logs trimmed
    for user_id, theirs in versions.items():
        logged = [
            orjson.loads(entry)[-1] for entry in client.lrange(keys.user_log(0, user_id), 0, -1)
        ]
        assert logged == theirs[::-1][:2], user_id  # newest first
