"""`segstream bench` on the user's own Kafka and Redis (the session's stand in for them):
it measures there and leaves nothing behind. Apart from test_bench.py, so that the two
small runs go on side by side."""

from __future__ import annotations

import orjson
import pytest
import redis
from confluent_kafka.admin import AdminClient

from tests.integration.small_bench import small_bench

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # a small bench: ~4 min


def test_a_bench_on_your_own_kafka_and_redis_leaves_nothing_behind(stack, tmp_path):
    """The session's broker and Redis stand in for a user's: the bench measures on them
    and removes its topics, groups and keys afterwards."""
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    client = redis.Redis.from_url(stack.redis_url)
    topics_before = set(admin.list_topics(timeout=10).topics)
    keys_before = client.dbsize()
    output = tmp_path / "bench.json"
    done = small_bench(output, "--kafka", stack.kafka_bootstrap, "--redis", stack.redis_url)
    figures = orjson.loads(output.read_bytes())
    assert figures["worker_eps"] > 0
    assert figures["broker"].startswith("Kafka cluster ")
    assert f"at {stack.kafka_bootstrap}, 1 broker, group protocols" in figures["broker"]
    assert "consumer" in figures["broker"]
    assert figures["redis"].startswith("Redis ")
    assert "(yours, one node)" in figures["redis"]
    assert "Kafka cluster" in done.stdout
    left = {t for t in admin.list_topics(timeout=10).topics if t not in topics_before}
    assert not {t for t in left if t.startswith("bench")}, left
    groups = [g.group_id for g in admin.list_consumer_groups().result().valid]
    assert not [g for g in groups if g.startswith("bench")], groups
    assert not list(client.scan_iter(match="bench*", count=1000))
    assert client.dbsize() == keys_before
