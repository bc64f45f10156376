"""The Redis store's commit on a real Redis: one fenced MULTI/EXEC per partition."""

from __future__ import annotations

import pytest
import redis

from state.redis_store import RedisStateStore
from state.store import BatchCommit, Counters, PartitionCommit, PartitionProgress
from tests.integration.conftest import isolated_settings

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
        PartitionProgress(10, 1700.5, 1690.5),
        rows={user: b"row-" + user.encode() for user in users},
        counters=Counters(events=2_500, users=2_500),
        new_users=users,
        timers={user: 1_700_000_000 + n for n, user in enumerate(users)},
    )
    assert store.commit(BatchCommit([first], "r1")) == {}
    assert store.progress([1]) == {1: PartitionProgress(10, 1700.5, 1690.5)}
    assert store.rows({1: users}) == {user: b"row-" + user.encode() for user in users}
    assert client.scard(keys.partition_users(1)) == 2_500
    assert int(client.hget(keys.counters(1), "events")) == 2_500
    due = store.due_timers({1: 1_700_000_009}, limit=100)[1].entries
    assert due == [(1_700_000_000 + n, users[n]) for n in range(10)]

    stale = PartitionCommit(1, None, PartitionProgress(20, 1800.0, 1790.0), rows={"x": b"x"})
    assert store.commit(BatchCommit([stale], "r1")) == {
        1: "at offset 10, this worker expected None"
    }
    expired = PartitionCommit(
        1, 10, PartitionProgress(20, 1800.0, 1790.0), expired_users=users[:1_500]
    )
    assert store.commit(BatchCommit([expired], "r1")) == {}
    assert store.progress([1])[1].offset == 20
    assert not client.exists(keys.state(1, "x"))
    assert len(store.rows({1: users})) == 1_000
    assert client.scard(keys.partition_users(1)) == 1_000
