"""A store written with the earlier key layout is refused by the worker, then converted by
`segstream migrate` to the same profiles, sizes and totals, and the worker goes on."""

from __future__ import annotations

import threading

import pytest
import redis

from state.keys import KeyLayout
from streams.redis_clients import redis_client
from streams.settings import Settings
from streams.tools.simulate import KafkaSink, send
from streams.tools.simulator import Simulation
from tests.integration.conftest import export, segstream, wait_for_events

pytestmark = pytest.mark.integration


def produce(settings: Settings, simulation: Simulation) -> int:
    """Send every event of `simulation`; how many."""
    send(simulation, KafkaSink(settings), rate=0, duration=0, limit=0, stop=threading.Event())
    return sum(1 for _ in simulation.events())


def to_earlier_layout(client: redis.Redis, keys: KeyLayout) -> None:
    """Rewrite a tagged store as the release before partition tags wrote it."""
    earlier = f"{keys.prefix}:"
    topic = keys.topic
    for raw in list(client.scan_iter(match=f"{keys.prefix}:{{*", count=1_000)):
        key = raw.decode()
        if key.startswith(keys.model):
            client.rename(key, f"{earlier}model{key[len(keys.model) :]}")
            continue
        tag, _, rest = key[len(earlier) :].partition("}:")
        partition = int(tag.rsplit(".", 1)[1])
        kind, _, name = rest.partition(":")
        if kind in ("s", "u"):
            client.rename(key, f"{earlier}{kind}:{name}")
        elif kind in ("m", "cm"):
            client.sunionstore(f"{earlier}{kind}:{name}", [f"{earlier}{kind}:{name}", key])
            client.delete(key)
        elif kind in ("segments", "clusters"):
            client.sunionstore(f"{earlier}{kind}", [f"{earlier}{kind}", key])
            client.delete(key)
        elif kind == "o":
            client.rename(key, f"{earlier}o:{name}:{topic}:{partition}")
        elif kind == "pu":
            client.rename(key, f"{earlier}pu:{topic}:{partition}")
        elif kind == "t":
            suffix = f":{name}" if name else ""
            client.rename(key, f"{earlier}t:{topic}:{partition}{suffix}")
        elif kind == "stats":
            for field, amount in client.hgetall(key).items():
                client.hincrby(keys.earlier_counters, field.decode(), int(amount))
            client.delete(key)


def test_an_earlier_store_is_refused_then_migrated_and_the_worker_goes_on(
    config, model, start_worker
):
    total = produce(config, Simulation(users=60, seed=21))
    worker = start_worker()
    wait_for_events(model, total)
    assert worker.stop() == 0
    reference = export(config)
    sizes, counters = model.segment_sizes(), model.counters()
    client = redis_client(config)
    keys = config.key_layout()
    client.rpush(keys.model_history, b'{"version": 1}')  # as the trainer keeps it
    to_earlier_layout(client, keys)
    assert not client.exists(keys.model_history)
    assert model.counters() == {}

    refused = segstream(config, "worker", timeout=120)
    assert refused.returncode == 1
    assert "segstream migrate" in refused.stderr

    migrated = segstream(config, "migrate", timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert "to the partition-tagged layout" in migrated.stdout
    assert export(config) == reference
    assert model.segment_sizes() == sizes
    assert model.counters() == counters
    assert client.lrange(keys.model_history, 0, -1) == [b'{"version": 1}']
    again = segstream(config, "migrate")
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout

    more = produce(config, Simulation(users=20, seed=22))
    worker = start_worker()
    wait_for_events(model, total + more)
    assert worker.stop() == 0
