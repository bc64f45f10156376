"""The bench's console figures: each page's p99 answer time over a store of 100,000 users
whose records are full.

The store is the preview's (`fill_preview_store`: the one-worker run's users copied
under new ids), given what the workers write beside the state rows: each user's
labels and membership, and a full day of minute samples and 30 days of hour samples
of the sizes. The API then answers, one request at a time, each page and fragment
`requests` times, signed in with the bench's token::

    fill_console_records(store_settings)
    p99 = console_p99(url, "bench", store_settings, requests=200)
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import cast

import orjson
import requests

from processors._core import User
from state.activity import HOURS, MINUTES, SizeSample
from state.redis_store import RedisStateStore
from streams.redis_clients import redis_client
from streams.settings import Settings
from streams.tools.bench.parts import percentiles
from streams.tools.preview_table import tightened_default_rules

_CHUNK = 2_000


def fill_console_records(settings: Settings) -> list[str]:
    """Write every stored user's labels and membership, and full size histories, into
    `settings`' keys; returns the users' ids."""
    client = redis_client(settings)
    keys = settings.key_layout()
    store = RedisStateStore(client, keys, settings.group_id)
    users: list[str] = []
    sizes: dict[str, int] = defaultdict(int)
    partitions = store.claim_partition_count(settings.partitions)
    try:
        for partition in range(partitions):
            for chunk in store.partition_users(partition):
                with client.pipeline(transaction=False) as pipe:
                    for user_id, row in store.rows({partition: chunk}).items():
                        user = User.from_bytes(row)
                        users.append(user_id)
                        pipe.hset(
                            keys.labels(partition, user_id),
                            mapping={
                                "segments": orjson.dumps(user.segments),
                                "cluster": user.cluster or "",
                                "version": str(user.version),
                                "event_time": repr(user.as_of),
                                "rules_version": "bench",
                                "alias_of": "",
                            },
                        )
                        for segment in user.segments:
                            pipe.sadd(keys.members(partition, segment), user_id)
                            sizes[segment] += 1
                    pipe.execute()
        now = time.time()
        sample = SizeSample(now, dict(sizes), {}, {f"+{s}": n for s, n in sizes.items()})
        for resolution, count, step in (("m", MINUTES, 60.0), ("h", HOURS, 3600.0)):
            key = keys.size_series(resolution)
            client.delete(key)
            for start in range(0, count, _CHUNK):
                shifted = [
                    SizeSample(now - i * step, sample.segments, {}, sample.moves).encode()
                    for i in range(start, min(count, start + _CHUNK))
                ]
                client.rpush(key, *shifted)
    finally:
        client.close()
    return users


def console_p99(url: str, token: str, users: list[str], requests_per_page: int) -> dict[str, float]:
    """Each page's (and fragment's) p99 answer time in ms, over `requests_per_page`
    sequential requests."""
    session = requests.Session()
    signed = session.post(f"{url}/console/sign-in", data={"token": token}, timeout=30)
    signed.raise_for_status()
    segments = cast(
        dict[str, list[dict[str, object]]],
        session.get(
            f"{url}/v1/segments", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ).json(),
    )["segments"]
    largest = max(segments, key=lambda segment: cast(int, segment["size"]))["name"]
    chosen = random.Random(7).choices(users, k=requests_per_page)
    rules = {"rules": tightened_default_rules()}
    pages: dict[str, Callable[[int], requests.Response]] = {
        "segments": lambda _: session.get(f"{url}/console", timeout=30),
        "segments_fragment": lambda _: session.get(f"{url}/console/fragments/segments", timeout=30),
        "segment": lambda _: session.get(f"{url}/console/segments/{largest}", timeout=30),
        "profile": lambda n: session.get(
            f"{url}/console/users", params={"id": chosen[n]}, timeout=30
        ),
        "rules": lambda _: session.get(f"{url}/console/rules", timeout=30),
        "validate": lambda _: session.post(f"{url}/console/rules/validate", data=rules, timeout=30),
    }
    found: dict[str, float] = {}
    for name, fetch in pages.items():
        latencies = []
        for n in range(requests_per_page):
            started = time.perf_counter()
            answer = fetch(n)
            latencies.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise RuntimeError(f"console {name} answered {answer.status_code}")
        found[name] = round(percentiles(latencies)[1], 1)
    return found
