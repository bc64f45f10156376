"""A worker under steady live load: its memory stays flat and its lag stays bounded.

`SOAK_SECONDS` sets how long the load lasts (`make soak`: 600) and `SOAK_RATE` the events
per second (`make soak`: 3,000, half of one worker's throughput in `make bench` on the
project machine).
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from streams.tools.simulator import Simulation
from tests.integration.conftest import wait_for_events

pytestmark = pytest.mark.integration
SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
RATE = float(os.environ.get("SOAK_RATE", "1500"))
SAMPLE_EVERY = 2.0


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def live_events(users: int = 20_000, populations: int = 50):
    """Simulated shoppers' events, replayed round after round with fresh message ids; the
    first round is drawn before this returns, so drawing costs the timed loop nothing.

    Round `r` plays the pool's users as population `r % populations`, so the load comes
    from about 100,000 users (as in `make bench`), each sending a few events a minute.
    """
    pool = [
        (event.key, orjson.loads(event.value))
        for event in itertools.islice(Simulation(users=users, seed=5).events(), 50_000)
    ]
    return _rounds(pool, populations)


def _rounds(pool, populations):
    for round_ in itertools.count():
        suffix = f"-p{round_ % populations}"
        for key, body in pool:
            if isinstance(body, dict):
                event = {**body, "messageId": f"soak-{round_}-{body.get('messageId')}"}
                for field in ("userId", "anonymousId", "previousId"):
                    if isinstance(event.get(field), str):
                        event[field] += suffix
                yield (None if key is None else key + suffix.encode()), event


def test_memory_and_lag_stay_bounded_under_steady_load(config, start_worker, model):
    # the users kept decoded between batches fill their bound before the steady start, so
    # that any growth after it is not theirs
    worker = start_worker(config.model_copy(update={"resident_users": 1_000}))
    worker.wait_for_log("partitions assigned")
    producer = Producer({"bootstrap.servers": config.kafka_bootstrap, "linger.ms": 5})
    source = live_events()
    samples: list[tuple[float, int, int]] = []  # (elapsed, rss, lag)
    sent = 0
    begin = time.monotonic()
    next_sample = begin
    while (elapsed := time.monotonic() - begin) < SECONDS:
        while sent < int(elapsed * RATE):
            key, body = next(source)
            body["timestamp"] = datetime.now(UTC).isoformat()
            producer.produce(config.events_topic, orjson.dumps(body), key=key)
            sent += 1
        producer.poll(0)
        if time.monotonic() >= next_sample:
            counters = model.counters()
            seen = sum(counters.get(name, 0) for name in ("events", "duplicates", "dead_letters"))
            samples.append((elapsed, rss_bytes(worker.process.pid), sent - seen))
            next_sample += SAMPLE_EVERY
        time.sleep(0.005)
    assert producer.flush(30) == 0
    steady = [sample for sample in samples if sample[0] >= SECONDS / 4]
    baseline = steady[0][1]
    growth = max(rss for _, rss, _ in steady) / baseline - 1
    worst_lag = max(lag for _, _, lag in steady)
    print(
        f"soak: {sent:,} events in {SECONDS:.0f} s at {RATE:,.0f}/s; worker RSS "
        f"{baseline / 2**20:.1f} -> {samples[-1][1] / 2**20:.1f} MiB (most {growth:+.1%} over "
        f"the steady start); worst lag {worst_lag:,} events"
    )
    step = max(1, len(samples) // 10)
    for elapsed, rss, lag in samples[::step]:
        print(f"  at {elapsed:5.0f} s: RSS {rss / 2**20:6.1f} MiB, lag {lag:,} events")
    counters = wait_for_events(model, sent, timeout=120)
    assert counters["events"] + counters.get("dead_letters", 0) == sent, counters
    assert worker.process.poll() is None
    assert growth < 0.10, [(round(t), rss // 2**20) for t, rss, _ in samples]
    assert worst_lag < RATE * 5, [(round(t), lag) for t, _, lag in samples]
